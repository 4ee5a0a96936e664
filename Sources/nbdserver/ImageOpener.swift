// Opening FILE the way qemu-nbd does: through the block graph (probing, -f, --image-opts), with the
// cache mode, read-only and offset options, and qemu-nbd's "Failed to blk_new_open" wording.
import Glibc
import ImageFormats

enum ImageOpener {
    static func open(_ a: ServerArguments) -> any BlockNode {
        let file = a.file ?? ""
        // -l exports an internal snapshot, read-only (qemu-nbd loads it temporarily).
        let flags: OpenFlags = a.readOnly || a.loadSnapshot != nil ? [] : [.readWrite]
        var extra = BlockOptions()
        if let l = a.loadSnapshot {
            let parsed = try? BlockOptions.parseKeyValue(l)
            extra.set("load-snapshot", parsed?.string("snapshot.id") ?? parsed?.string("snapshot.name") ?? l)
        }
        let cache: CacheMode
        do { cache = try CacheMode.parse(a.cache ?? "writeback") } catch { Program.fail("Invalid cache mode `\(a.cache ?? "")'") }
        let context = OpenContext(flags: flags, cache: cache)
        let warn: (String) -> Void = { Program.writeStderr($0 + "\n") }
        var node: any BlockNode
        do {
            if a.imageOpts {
                if a.format != nil { Program.fail("--image-opts and -f are mutually exclusive") }
                let opts = try BlockOptions.parseKeyValue(file, impliedKey: "file").merging(extra)
                node = try BlockGraph.open(filename: nil, options: opts, context: context, warn: warn)
            } else {
                node = try BlockGraph.open(filename: file, format: a.format, options: extra, context: context, warn: warn)
            }
        } catch let e as BlockError where e.message.hasPrefix("Failed to load snapshot") {
            Program.fail(e.message)
        } catch let e as BlockError where a.loadSnapshot != nil && e.message.hasPrefix("Invalid parameter") {
            Program.fail("Failed to load snapshot: Block format used by device '' does not support temporarily loading internal snapshots")
        } catch let e as BlockError {
            Program.fail("Failed to blk_new_open '\(file)': \(e.message)" + (e.hint.map { "\n" + $0 } ?? ""))
        } catch {
            Program.fail("Failed to blk_new_open '\(file)': \(error)")
        }
        if a.snapshot {
            node = temporaryOverlay(over: node, file: file, context: context)
        }
        if a.offset != 0 {
            var o = BlockOptions()
            o.set("offset", String(a.offset))
            do {
                node = try RawNode(file: node, options: o, probed: false)
            } catch let e as BlockError {
                Program.fail(e.message)
            } catch {
                Program.fail("\(error)")
            }
        }
        if a.loadSnapshot != nil && node.driverName != "qcow2" {
            Program.fail("Failed to load snapshot: Block format '\(node.driverName)' used by device '' does not support temporarily loading internal snapshots")
        }
        return node
    }

    /// -s: writes go to a temporary qcow2 overlay whose backing file is FILE (QEMU's
    /// bdrv_append_temp_snapshot). The overlay lives in $TMPDIR (default /var/tmp) and is
    /// unlinked as soon as it is open, so nothing is left behind however the server ends.
    static func temporaryOverlay(over base: any BlockNode, file: String, context: OpenContext) -> any BlockNode {
        let dir = getenv("TMPDIR").map { String(cString: $0) } ?? "/var/tmp"
        var template = Array("\(dir)/vl.XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        if fd < 0 {
            Program.fail("Could not get temporary filename: \(String(cString: strerror(errno)))")
        }
        close(fd)
        let overlay = String(cString: template)
        var resolved = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let backing = realpath(base.filename, &resolved) != nil ? String(cString: resolved) : base.filename
        let size = base.size
        do {
            try? base.close()
            guard let qcow2 = FormatRegistry.driver(named: "qcow2") else {
                throw BlockError(.unsupported, "Unknown driver 'qcow2'", errno: ENOTSUP)
            }
            var o = BlockOptions()
            o.set("backing_file", backing)
            o.set("backing_fmt", base.driverName)
            try qcow2.create(filename: overlay, size: size, options: o)
            var c = context
            c.flags.insert(.readWrite)
            let node = try BlockGraph.open(filename: overlay, format: "qcow2", context: c)
            unlink(overlay)
            return node
        } catch let e as BlockError {
            unlink(overlay)
            Program.fail("Failed to blk_new_open '\(file)': \(e.message)")
        } catch {
            unlink(overlay)
            Program.fail("Failed to blk_new_open '\(file)': \(error)")
        }
    }
}
