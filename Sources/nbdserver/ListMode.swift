// -L/--list: print another server's exports the way qemu-nbd does.
import Glibc
import NBD

enum ListMode {
    static let flagNames: [(NBDTransmissionFlags, String)] = [
        (.readOnly, "readonly"), (.sendFlush, "flush"), (.sendFUA, "fua"), (.rotational, "rotational"),
        (.sendTrim, "trim"), (.sendWriteZeroes, "zeroes"), (.sendDF, "df"), (.canMultiConn, "multi"),
        (.sendResize, "resize"), (.sendCache, "cache"), (.sendFastZero, "fast-zero"),
    ]

    static func run(address: NBD.SocketAddress, tls: TLSSetup?, hostname: String) -> Int32 {
        var config = NBDClientConfig()
        if let t = tls {
            do { config.tls = try t.clientUpgrade(hostname: hostname) } catch { Program.fail("\(error)") }
        }
        let list: [NBDListedExport]
        do {
            list = try NBDClient.listExports(address, config: config)
        } catch let e as NBDError {
            Program.fail(e.message)
        } catch {
            Program.fail("\(error)")
        }
        var out = "exports available: \(list.count)\n"
        for e in list {
            out += " export: '\(e.name)'\n"
            if !e.description.isEmpty { out += "  description: \(e.description)\n" }
            if let d = e.details {
                if d.flags.contains(.hasFlags) {
                    out += "  size:  \(d.size)\n"
                    let names = flagNames.filter { d.flags.contains($0.0) }.map { " " + $0.1 }.joined()
                    out += "  flags: 0x\(String(d.flags.rawValue, radix: 16)) (\(names) )\n"
                }
                if d.minimumBlock != 0 {
                    out += "  min block: \(d.minimumBlock)\n"
                    out += "  opt block: \(d.preferredBlock)\n"
                    out += "  max block: \(d.maximumBlock)\n"
                }
            }
            if !e.contexts.isEmpty {
                out += "  available meta contexts: \(e.contexts.count)\n"
                for c in e.contexts { out += "   \(c)\n" }
            }
        }
        print(out, terminator: "")
        return 0
    }
}
