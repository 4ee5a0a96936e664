// imgtool snapshot: -l list, -c create, -a apply, -d delete, with qemu-img's messages.
import Glibc
import ImageFormats

private let optObject: Int32 = 256, optImageOpts: Int32 = 257

func runSnapshot(_ args: [String]) throws -> Int32 {
    enum Action { case list, create(String), apply(String), delete(String) }
    var action: Action?
    var src = ImageSource()
    var quiet = false
    let (events, operands) = getopt(args, "la:c:d:f:hqU", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "object", hasArgument: true, code: optObject),
        LongOption(name: "image-opts", hasArgument: false, code: optImageOpts),
        LongOption(name: "force-share", hasArgument: false, code: Character("U").code),
    ])
    for e in events {
        try handleCommonError(e)
        guard case .option(let c, let v) = e else { continue }
        switch c {
        case optImageOpts: src.imageOpts = true
        case optObject: try createObject(v!)
        default:
            let ch = c.optionChar
            if "lacd".contains(ch) {
                if action != nil { throw usageError("Cannot mix '-l', '-a', '-c', '-d'") }
                switch ch {
                case "l": action = .list
                case "a": action = .apply(v!)
                case "c": action = .create(v!)
                default: action = .delete(v!)
                }
                continue
            }
            switch ch {
            case "h": printHelp(); return 0
            case "f": src.format = v
            case "q": quiet = true
            case "U": src.forceShare = true
            default: break
            }
        }
    }
    _ = quiet
    guard operands.count == 1 else { throw usageError("Expecting one image file name") }
    let filename = operands[0]
    var flags: OpenFlags = [.readWrite]
    if case .list = action { flags = [] }
    if action == nil { flags = [.readWrite] }
    let node = try openImage(filename, src, flags: flags)
    defer { _ = closeImage(node) }
    let snap = node as? any SnapshotCapableNode
    switch action {
    case .none:
        return 0
    case .list:
        let list = node.snapshots
        if !list.isEmpty {
            out("Snapshot list:")
            out(snapshotHeader())
            for s in list { out(snapshotLine(ImageInfo.snapshotJSON(s))) }
        }
        return 0
    case .create(let name):
        guard let snap else { throw fail("Could not create snapshot '\(name)': -95 (Operation not supported)") }
        var tv = timeval()
        gettimeofday(&tv, nil)
        let truncated = String(decoding: Array(name.utf8.prefix(255)), as: UTF8.self)
        do {
            try snap.createSnapshot(name: truncated, dateSec: UInt32(truncatingIfNeeded: tv.tv_sec), dateNsec: UInt32(tv.tv_usec) * 1000)
        } catch let e as BlockError {
            throw fail("Could not create snapshot '\(name)': -\(e.errno) (\(BlockError.strerror(e.errno)))")
        }
    case .apply(let name):
        guard let snap else { throw fail("Could not apply snapshot '\(name)': Failed to load snapshot: Operation not supported") }
        do { try snap.applySnapshot(name) } catch let e as BlockError {
            report(e, prefix: "Could not apply snapshot '\(name)': ")
            return 1
        }
    case .delete(let name):
        guard let snap else { throw fail("Could not delete snapshot '\(name)': snapshot not found") }
        // qemu-img looks the snapshot up by name.
        guard let sn = node.snapshots.first(where: { $0.name == name }) else {
            throw fail("Could not delete snapshot '\(name)': snapshot not found")
        }
        do { try snap.deleteSnapshot(id: sn.id, name: sn.name) } catch let e as BlockError {
            report(e, prefix: "Could not delete snapshot '\(name)': ")
            return 1
        }
    }
    return 0
}
