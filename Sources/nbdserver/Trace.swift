// -T/--trace: QEMU's "[enable=]PATTERN[,events=FILE][,file=FILE]". The server's trace events are
// the few the NBD module reports (negotiated options, requests, replies); a pattern that matches
// none of them gets QEMU's warning, as qemu-nbd gives for an unknown event. Matching events are
// written to stderr (or FILE) one line each.
import Glibc
import NBD

enum Trace {
    static let events = ["nbd_negotiate_options_check_option", "nbd_negotiate_success",
                         "nbd_co_receive_request_decode_type", "nbd_co_send_chunk_error"]
    nonisolated(unsafe) private(set) static var enabled: Set<String> = []
    nonisolated(unsafe) private(set) static var output: Int32 = 2

    static func configure(_ specs: [String], report: (String) -> Void) {
        for spec in specs {
            var patterns: [String] = []
            for part in spec.split(separator: ",", omittingEmptySubsequences: true) {
                if part.hasPrefix("enable=") {
                    patterns.append(String(part.dropFirst(7)))
                } else if part.hasPrefix("events=") {
                    let path = String(part.dropFirst(7))
                    if let f = fopen(path, "r") {
                        var line = [UInt8](repeating: 0, count: 1024)
                        while line.withUnsafeMutableBufferPointer({ b in
                            b.withMemoryRebound(to: CChar.self) { fgets($0.baseAddress, 1024, f) }
                        }) != nil {
                            let s = String(decoding: line.prefix(while: { $0 != 0 }), as: UTF8.self).trimmingCharacters()
                            if !s.isEmpty && !s.hasPrefix("#") { patterns.append(s) }
                        }
                        fclose(f)
                    } else {
                        report("cannot open events file '\(path)': \(String(cString: strerror(errno)))")
                    }
                } else if part.hasPrefix("file=") {
                    let fd = open(String(part.dropFirst(5)), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                    if fd >= 0 { output = fd }
                } else {
                    patterns.append(String(part))
                }
            }
            for p in patterns {
                let negate = p.hasPrefix("-")
                let pat = negate ? String(p.dropFirst()) : p
                let hits = events.filter { fnmatch(pat, $0, 0) == 0 }
                if hits.isEmpty && !pat.contains("*") && !pat.contains("?") {
                    report("warning: trace event '\(pat)' does not exist")
                }
                if negate { enabled.subtract(hits) } else { enabled.formUnion(hits) }
            }
        }
    }

    /// The hook handed to the server (nil when nothing is enabled, so untraced runs pay nothing).
    static var hook: (@Sendable (String, String) -> Void)? {
        enabled.isEmpty ? nil : { @Sendable in emit($0, $1) }
    }

    static func emit(_ event: String, _ details: String) {
        guard enabled.contains(event) else { return }
        let line = "\(getpid())@\(Deadline.now() / 1000) \(event) \(details)\n"
        _ = line.withCString { write(output, $0, strlen($0)) }
    }
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\n" || f == "\t" || f == "\r" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\n" || l == "\t" || l == "\r" { s.removeLast() }
        return String(s)
    }
}
