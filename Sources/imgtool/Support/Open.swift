// Opening images the way qemu-img's img_open does: -f, --image-opts, -U, cache modes, QEMU's
// "Could not open 'name': ..." message and the probed-raw warning.
import ImageFormats

struct ImageSource {
    var format: String?
    var imageOpts = false
    var forceShare = false
    var cache: CacheMode = .writeback
}

func openImage(_ filename: String, _ src: ImageSource, flags: OpenFlags, options extra: BlockOptions = BlockOptions(),
               quiet: Bool = false) throws -> any BlockNode {
    if src.imageOpts && src.format != nil {
        throw fail("--image-opts and --format are mutually exclusive")
    }
    var f = flags
    if src.forceShare { f.insert(.forceShare) }
    let ctx = OpenContext(flags: f, cache: src.cache)
    do {
        if src.imageOpts {
            let opts = try BlockOptions.parseKeyValue(filename).merging(extra)
            return try BlockGraph.open(filename: nil, options: opts, context: ctx, warn: { printStderr($0) })
        }
        return try BlockGraph.open(filename: filename, format: src.format, options: extra, context: ctx,
                                   warn: { printStderr($0) })
    } catch let e as BlockError {
        report(e, prefix: "Could not open '\(filename)': ")
        throw ExitStatus(code: 1)
    }
}

/// Closes a node, reporting (not throwing) a failure to write back metadata.
func closeImage(_ node: any BlockNode) -> Bool {
    do {
        try node.close()
        return true
    } catch {
        report(error)
        return false
    }
}

/// Parses the common option events; returns true if it handled the event.
func handleCommonError(_ e: OptionEvent) throws {
    switch e {
    case .missingArgument(let o): throw usageError("missing argument for option '\(o)'")
    case .unrecognized(let o): throw usageError("unrecognized option '\(o)'")
    case .option: break
    }
}

extension Int32 {
    /// The option character of a getopt code (0 for long-only codes >= 256).
    var optionChar: Character { self < 256 && self > 0 ? Character(UnicodeScalar(UInt8(self))) : "\0" }
}

/// --object, created as qemu-img creates it: at once, while the options are read, so that a later
/// image's tls-creds=ID finds it (and a bad object is reported before a bad later option). Help
/// ("--object help", "--object TYPE,help") prints on stdout and exits 0; an error exits 1.
func createObject(_ text: String) throws {
    do {
        if let help = try UserObjects.shared.create(text, catalog: .qemuImg) {
            out(help)
            throw ExitStatus(code: 0)
        }
    } catch let e as BlockError {
        report(e)
        throw ExitStatus(code: 1)
    }
}
