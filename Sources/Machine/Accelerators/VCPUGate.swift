// The run/pause/quit gate shared by an accelerator's vCPU threads and the machine's control thread.
//
// vCPU threads call `checkpoint(cpu)` between runs: it returns `.run` at once while running, blocks
// while paused (after counting the thread as parked), and returns `.quit` when shutting down.
// `pause()` flips the state and waits until every live vCPU thread is parked; the accelerator kicks
// the threads out of their blocking run call through `kick` so that they reach the checkpoint.

public final class VCPUGate: @unchecked Sendable {
    public enum Decision { case run, quit }
    private enum Mode { case running, paused, quitting }

    private let cond = Condition()
    private var mode: Mode = .paused
    private var parked = 0
    private var live = 0
    /// Makes the vCPU threads leave their run call soon (signal, flag).
    public var kick: (@Sendable () -> Void)?

    public init() {}

    /// Fast check for the vCPU loop: true when the thread should go to `checkpoint`.
    public var mustStop: Bool {
        cond.lock(); defer { cond.unlock() }
        return mode != .running
    }

    public func threadStarted() { cond.lock(); live += 1; cond.unlock() }
    public func threadEnded() { cond.lock(); live -= 1; cond.broadcast(); cond.unlock() }

    public func checkpoint() -> Decision {
        cond.lock(); defer { cond.unlock() }
        if mode == .paused {
            parked += 1
            cond.broadcast()
            while mode == .paused { cond.wait() }
            parked -= 1
        }
        return mode == .quitting ? .quit : .run
    }

    /// Parks all vCPU threads; returns when they are parked (or gone).
    public func pause() {
        cond.lock()
        if mode == .running { mode = .paused }
        cond.unlock()
        kick?()
        cond.lock()
        while parked < live && mode == .paused {
            cond.unlock()
            kick?()
            cond.lock()
            cond.wait(nanoseconds: 10_000_000)
        }
        cond.unlock()
    }

    public func resume() {
        cond.lock()
        if mode == .paused { mode = .running }
        cond.broadcast()
        cond.unlock()
    }

    /// Releases every thread with `.quit` and waits for them to end.
    public func quit() {
        cond.lock()
        mode = .quitting
        cond.broadcast()
        cond.unlock()
        kick?()
        cond.lock()
        while live > 0 {
            cond.unlock()
            kick?()
            cond.lock()
            cond.wait(nanoseconds: 10_000_000)
        }
        cond.unlock()
    }
}
