// Opening FILE the way qemu-nbd does: through the block graph (probing, -f, --image-opts), with the
// cache mode, read-only and offset options, and qemu-nbd's "Failed to blk_new_open" wording.
import Glibc
import ImageFormats

enum ImageOpener {
    static func open(_ a: ServerArguments) -> any BlockNode {
        let file = a.file ?? ""
        let flags: OpenFlags = a.readOnly ? [] : [.readWrite]
        if a.snapshot {
            Program.fail("Failed to blk_new_open '\(file)': snapshot mode (-s) needs the qcow2 driver, which this build lacks")
        }
        let cache: CacheMode
        do { cache = try CacheMode.parse(a.cache ?? "writeback") } catch { Program.fail("Invalid cache mode `\(a.cache ?? "")'") }
        let context = OpenContext(flags: flags, cache: cache)
        let warn: (String) -> Void = { Program.writeStderr($0 + "\n") }
        var node: any BlockNode
        do {
            if a.imageOpts {
                if a.format != nil { Program.fail("--image-opts and -f are mutually exclusive") }
                let opts = try BlockOptions.parseKeyValue(file, impliedKey: "file")
                node = try BlockGraph.open(filename: nil, options: opts, context: context, warn: warn)
            } else {
                node = try BlockGraph.open(filename: file, format: a.format, context: context, warn: warn)
            }
        } catch let e as BlockError {
            Program.fail("Failed to blk_new_open '\(file)': \(e.message)" + (e.hint.map { "\n" + $0 } ?? ""))
        } catch {
            Program.fail("Failed to blk_new_open '\(file)': \(error)")
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
        if a.loadSnapshot != nil {
            Program.fail("Failed to load snapshot: Block format '\(node.driverName)' used by device '' does not support temporarily loading internal snapshots")
        }
        return node
    }
}
