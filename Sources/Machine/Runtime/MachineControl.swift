// The machine's lifecycle: run state, requests from guests and monitors, and events.
//
// Anyone (a vCPU thread, a device, a QMP client, a signal handler) *requests* a transition; only the
// control thread, running `PCMachine.run()`, carries requests out, because pausing vCPUs from a vCPU
// thread would wait for itself. States and event payloads are QEMU's (RunState, SHUTDOWN with
// "guest"/"reason", RESET, STOP, RESUME, POWERDOWN), so monitors see what QEMU would send.
import Glibc
import ImageFormats

public enum RunState: String, Sendable {
    case prelaunch, running, paused, shutdown
    case internalError = "internal-error"
    case guestPanicked = "guest-panicked"
}

/// QEMU's ShutdownCause names.
public enum ShutdownCause: String, Sendable {
    case hostError = "host-error", hostQMPQuit = "host-qmp-quit", hostQMPSystemReset = "host-qmp-system-reset"
    case hostSignal = "host-signal", hostUI = "host-ui", guestShutdown = "guest-shutdown", guestReset = "guest-reset"
    case guestPanic = "guest-panic", subsystemReset = "subsystem-reset"
    public var fromGuest: Bool { rawValue.hasPrefix("guest") }
}

public enum MachineRequest: Sendable {
    case shutdown(ShutdownCause)
    case reset(ShutdownCause)
    case powerdown
    case stop
    case cont
    /// Exit the process now with this status (isa-debug-exit, fatal errors).
    case exit(Int32)
    case fatal(String)
}

/// One QMP event: name and data, stamped when emitted.
public struct MachineEvent: Sendable {
    public var name: String
    public var data: JSONValue?
    public var seconds: Int64
    public var microseconds: Int64
}

public final class MachineControl: @unchecked Sendable {
    private let cond = Condition()
    private var queue: [(MachineRequest, (@Sendable () -> Void)?)] = []
    private var state: RunState
    private var listeners: [Int: @Sendable (MachineEvent) -> Void] = [:]
    private var nextListener = 0

    public init(initial: RunState) { state = initial }

    public var runState: RunState {
        cond.lock(); defer { cond.unlock() }
        return state
    }

    func setState(_ s: RunState) {
        cond.lock(); state = s; cond.unlock()
    }

    /// Queues a request. `done` runs on the control thread once the request has been carried out
    /// (after its events were emitted, before the process exits), so a monitor can answer then.
    public func request(_ r: MachineRequest, done: (@Sendable () -> Void)? = nil) {
        cond.lock()
        queue.append((r, done))
        cond.broadcast()
        cond.unlock()
    }

    /// Queues a request and waits until it has been carried out.
    public func requestAndWait(_ r: MachineRequest) {
        let done = Latch()
        request(r) { done.open() }
        done.wait()
    }

    /// The next request; blocks until one arrives.
    func next() -> (MachineRequest, (@Sendable () -> Void)?) {
        cond.lock(); defer { cond.unlock() }
        while queue.isEmpty { cond.wait() }
        return queue.removeFirst()
    }

    /// Runs the completion callbacks of requests still queued (the machine is ending).
    func drainCompletions() {
        cond.lock()
        let q = queue
        queue.removeAll()
        cond.unlock()
        for (_, d) in q { d?() }
    }

    // MARK: events

    @discardableResult
    public func subscribe(_ f: @escaping @Sendable (MachineEvent) -> Void) -> Int {
        cond.lock(); nextListener += 1; let id = nextListener; listeners[id] = f; cond.unlock()
        return id
    }

    public func unsubscribe(_ id: Int) {
        cond.lock(); listeners[id] = nil; cond.unlock()
    }

    public func emit(_ name: String, _ data: JSONValue? = nil) {
        var tv = timeval()
        gettimeofday(&tv, nil)
        let e = MachineEvent(name: name, data: data, seconds: Int64(tv.tv_sec), microseconds: Int64(tv.tv_usec))
        cond.lock()
        let ls = Array(listeners.values)
        cond.unlock()
        for l in ls { l(e) }
    }
}
