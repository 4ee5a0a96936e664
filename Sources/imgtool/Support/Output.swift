// How imgtool talks: messages prefixed with the program name as invoked (imgtool, or qemu-img via
// a symlink), QEMU's human size format, and the exit statuses qemu-img uses.

import Glibc
import ImageFormats

/// The name messages start with: the basename of argv[0].
/// Writes all of `s` to a file descriptor.
func writeAll(_ fd: Int32, _ s: String) {
    var bytes = Array(s.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 { if errno == EINTR { continue }; return }
        done += n
    }
}

let programName: String = {
    let a0 = CommandLine.arguments.first ?? "imgtool"
    return a0.split(separator: "/").last.map(String.init) ?? "imgtool"
}()

/// Exits the process (from anywhere in a command) with a status.
struct ExitStatus: Error {
    let code: Int32
}

func printError(_ message: String) {
    writeAll(2, "\(programName): \(message)\n")
}

/// Prints a raw line to stderr (hints, warnings that carry their own prefix).
func printStderr(_ text: String) {
    writeAll(2, text.hasSuffix("\n") ? text : text + "\n")
}

/// A library error with its hint, as QEMU's error_report_err prints it.
func report(_ e: Error, prefix: String = "") {
    if let b = e as? BlockError {
        printError(prefix + b.message)
        if let h = b.hint { printStderr(h) }
    } else if let s = e as? ExitStatus {
        _ = s
    } else {
        printError(prefix + "\(e)")
    }
}

/// qemu-img's error_exit: the message, the --help hint, status 1.
func usageError(_ message: String) -> ExitStatus {
    printError(message)
    printStderr("Try '\(programName) --help' for more information")
    return ExitStatus(code: 1)
}

/// An error_report followed by status 1.
func fail(_ message: String) -> ExitStatus {
    printError(message)
    return ExitStatus(code: 1)
}

/// Buffered stdout (commands print a lot in map/info; one write at the end of each chunk).
final class Stdout: @unchecked Sendable {
    static let shared = Stdout()
    private var buffer = ""
    func print(_ s: String, terminator: String = "\n") {
        buffer += s
        buffer += terminator
        if buffer.utf8.count > 1 << 16 { flush() }
    }
    func flush() {
        guard !buffer.isEmpty else { return }
        writeAll(1, buffer)
        buffer = ""
    }
}

func out(_ s: String, terminator: String = "\n") { Stdout.shared.print(s, terminator: terminator) }

/// QEMU's size_to_str: three significant digits and a binary suffix ("196 KiB", "1.15 GiB").
func sizeToString(_ value: UInt64) -> String {
    let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
    var exponent: Int32 = 0
    _ = frexp(Double(value) / (1000.0 / 1024.0), &exponent)
    let i = Int((exponent - 1) / 10)   // C integer division truncates toward zero
    let div = Double(UInt64(1) << UInt64(i * 10))
    return cFormat("%0.3g ", Double(value) / div) + suffixes[i] + "B"
}

/// Parses --output=human|json with qemu-img's message.
enum OutputFormat {
    case human, json

    static func parse(_ s: String) throws -> OutputFormat {
        switch s {
        case "human": return .human
        case "json": return .json
        default: throw fail("--output must be used with human or json as argument.")
        }
    }
}

/// "YYYY-MM-DD HH:MM:SS" in local time, as QEMU's snapshot list prints dates.
func formatLocalDate(_ secs: Int) -> String {
    var t = time_t(secs)
    var tmv = tm()
    localtime_r(&t, &tmv)
    return cFormat("%04d-%02d-%02d %02d:%02d:%02d", Int(tmv.tm_year) + 1900, Int(tmv.tm_mon) + 1, Int(tmv.tm_mday),
                  Int(tmv.tm_hour), Int(tmv.tm_min), Int(tmv.tm_sec))
}
