// The subcommand table, help and version text, and the top-level argv handling.

import Glibc
import ImageFormats

/// The subcommands, as qemu-img names them.
func handler(for name: String) -> (([String]) throws -> Int32)? {
    switch name {
    case "create": return runCreate
    case "info": return runInfo
    case "check": return runCheck
    case "convert": return runConvert
    case "map": return runMap
    case "compare": return runCompare
    case "measure": return runMeasure
    case "snapshot": return runSnapshot
    case "resize": return runResize
    case "commit": return runCommit
    case "rebase": return runRebase
    case "amend": return runAmend
    case "dd": return runDD
    case "bench": return runBench
    case "bitmap": return runBitmap
    default: return nil
    }
}

/// qemu-img subcommands that exist but are not implemented here yet: a clear message, status 1.
let notYet: [String] = []

func runMain() -> Int32 {
    toolName = programName
    let args = CommandLine.arguments
    let (events, operands) = getopt(args, "+hVT:", [
        LongOption(name: "help", hasArgument: false, code: Character("h").code),
        LongOption(name: "version", hasArgument: false, code: Character("V").code),
        LongOption(name: "trace", hasArgument: true, code: Character("T").code),
    ])
    for e in events {
        switch e {
        case .missingArgument(let o): return usageError("missing argument for option '\(o)'").code
        case .unrecognized(let o): return usageError("unrecognized option '\(o)'").code
        case .option(let c, _):
            if c == Character("h").code { printHelp(); return 0 }
            if c == Character("V").code { printVersion(); return 0 }
            // -T (tracing) is accepted and ignored: there are no trace points to enable.
        }
    }
    guard let name = operands.first else { return usageError("Not enough arguments").code }
    if name == "--help" || name == "-h" { printHelp(); return 0 }
    guard let handler = handler(for: name) else {
        if notYet.contains(name) {
            printError("'\(name)' is not implemented yet")
            return 1
        }
        return usageError("Command not found: \(name)").code
    }
    do {
        let status = try handler(operands)
        Stdout.shared.flush()
        return status
    } catch let s as ExitStatus {
        Stdout.shared.flush()
        return s.code
    } catch {
        Stdout.shared.flush()
        report(error)
        return 1
    }
}

func printVersion() {
    out("\(programName) version 0.1.0 (vmtoolkit; qemu-img compatible)")
    out("A storage-first virtualization toolkit in Swift")
}

func printHelp() {
    out("""
    \(programName) version 0.1.0 (vmtoolkit; qemu-img compatible)
    usage: \(programName) [standard options] command [command options]
    QEMU-compatible disk image utility

        '-h', '--help'       display this help and exit
        '-V', '--version'    output version information and exit
        '-T', '--trace'      accepted for compatibility (no trace points)

    Command syntax:
      check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename
      compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2
      convert [--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-b backing_file [-F backing_fmt]] [-o options] [-l snapshot_param] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] filename [filename2 [...]] output_filename
      create [--object objectdef] [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
      info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename
      map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename
      measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] [--image-opts] [-f fmt] [-l snapshot_param] filename]

    Not implemented yet: \(notYet.joined(separator: ", "))

    Supported formats: \(FormatRegistry.all.map { $0.name }.sorted().joined(separator: " "))
    """)
}

