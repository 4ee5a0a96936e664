// One place that writes vmrun's diagnostics to stderr in QEMU's shape ("qemu-system-x86_64: ...").
// The program name is set once by the front end; the library never prints anywhere else.
import Synchronization

public enum Diagnostics {
    private static let name = Mutex<String>("vmrun")

    public static var programName: String {
        get { name.withLock { $0 } }
        set { name.withLock { $0 = newValue } }
    }

    public static func error(_ message: String) { write("\(programName): \(message)\n") }
    public static func warn(_ message: String) { write("\(programName): warning: \(message)\n") }
    public static func info(_ message: String) { write("\(programName): \(message)\n") }

    public static func write(_ text: String) {
        HostFile.writeAll(2, text)
    }
}
