// Diagnostics without Foundation: the interpreter links into vmrun, whose resident size is budgeted
// (Foundation and its ICU data cost ~10 MiB), so stderr and the environment go through Glibc.
import Glibc

/// Writes a message to stderr in one call, so lines from several vCPUs do not interleave.
func writeDiagnostic(_ message: String) {
    var m = message
    m.withUTF8 { buf in
        var done = 0
        while done < buf.count {
            let n = write(2, buf.baseAddress! + done, buf.count - done)
            if n <= 0 { break }
            done += n
        }
    }
}

/// True when the environment variable is set (to anything), as the X86_TRACE_* switches are read.
func environmentFlag(_ name: String) -> Bool { getenv(name) != nil }

/// X86_TRACE_RIP's period in nanoseconds: a value above 1 is microseconds, anything else a second.
func environmentInterval(_ name: String) -> UInt64 {
    guard let v = getenv(name), let us = UInt64(String(cString: v)), us > 1 else { return 1_000_000_000 }
    return us * 1000
}
