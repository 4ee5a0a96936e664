// The vCPU loop: poll events and interrupts every few blocks (or at once after anything that can
// change them), find or decode the block at RIP, run its instructions, deliver faults.

extension CPUCore {
    mutating func run() -> X86ExitReason {
        while true {
            if shutdownRequested { shutdownRequested = false; return .shutdown }
            pollCountdown &-= 1
            if pollNow || pollCountdown <= 0 || activity != .running {
                pollCountdown = 512
                pollNow = false
                if platformRef.shouldStop(cpu: index) { return .stopRequested }
                // A data or I/O breakpoint's trap, unless a MOV SS shadow holds it one instruction.
                if bp.hits != 0 && !interruptShadow { raiseDebugTrap(status: 0) }
                syncCodeEpoch()   // other vCPUs' newly decoded code pages lose our write tags
                if traceRIP { watchdog() }
                #if X86_PROFILE
                profTick()
                #endif
                if !pollEvents() { continue }
            }
            runOneBlock()
        }
    }

    /// Handles NMI/INIT/SIPI and maskable interrupts; waits while halted. Returns false when the CPU
    /// is not running (the loop polls again).
    mutating func pollEvents() -> Bool {
        let ev = platformRef.takePendingEvents(cpu: index)
        if !ev.isEmpty {
            if ev.initSignal {
                resetArchitectural()
                activity = index == 0 ? .running : .waitForSIPI
                if index == 0 { return true }
            }
            if let v = ev.startupVector, activity == .waitForSIPI {
                loadCS(UInt16(v) << 8, descriptor: nil, cpl: 0)
                rip = 0
                activity = .running
            }
            if ev.nmi && !nmiBlocked && activity != .waitForSIPI {
                nmiBlocked = true
                let resume = rip
                do { try deliver(vector: 2, code: nil, kind: .nmi, next: resume) } catch { raise(error) }
            }
        }
        if activity == .waitForSIPI {
            platformRef.waitForInterrupt(cpu: index, deadlineNanos: nil)
            pollNow = true
            return false
        }
        if flags & RFlag.ifl != 0 && !interruptShadow && platformRef.hasPendingInterrupt(cpu: index) {
            if let v = platformRef.acknowledgeInterrupt(cpu: index) {
                let resume = rip
                do { try deliver(vector: v, code: nil, kind: .hardware, next: resume) } catch { raise(error) }
                return !shutdownRequested
            }
        }
        if activity == .halted {
            #if X86_PROFILE
            let t0 = monotonicNanos(); defer { profHalt &+= monotonicNanos() - t0; profHalts &+= 1 }
            #endif
            platformRef.waitForInterrupt(cpu: index, deadlineNanos: nil)
            pollNow = true
            return false
        }
        return true
    }

    mutating func runOneBlock() {
        if flags & (RFlag.tf | RFlag.rf) != 0 { singleStep(); return }
        let b: UnsafeMutablePointer<BlockInfo>
        do {
            b = try currentBlock()
        } catch {
            raise(error)
            return
        }
        if traceBlocks { traceBlock(b) }
        #if X86_PROFILE
        profBlock(b)
        #endif
        let start = UnsafePointer(blocks.insts + Int(b.pointee.first))
        let n: Int
        if interruptShadow {
            // One instruction under the STI/MOV SS shadow, then look for interrupts at once.
            n = 1
            interruptShadow = false
            pollNow = true
        } else {
            n = Int(b.pointee.count)
        }
        let guest = n == Int(b.pointee.count) ? UInt64(b.pointee.guestCount) : UInt64(n)
        do throws(Fault) {
            try execBlock(start, start + n, block: b, chain: n == Int(b.pointee.count) && !traceBlocks)
        } catch {
            stopBlock = false
            if error.vector != 0xFF {
                bp.hits = 0   // the faulting instruction's breakpoint matches are not reported
                raise(error)
            }
        }
        instructions &+= guest
    }
}

import Glibc

extension CPUCore {
    mutating func traceBlock(_ b: UnsafeMutablePointer<BlockInfo>) {
        let msg = "x86[\(index)]: block \(String(segs[SegReg.cs].selector, radix: 16)):\(String(rip, radix: 16)) n=\(b.pointee.count) rax=\(String(r[0], radix: 16)) rcx=\(String(r[1], radix: 16)) rsp=\(String(r[4], radix: 16))\n"
        writeDiagnostic(msg)
    }
}

extension CPUCore {
    mutating func watchdog() {
        let now = monotonicNanos()
        if now < nextRIPTrace { return }
        nextRIPTrace = now + traceRIPInterval
        let msg = "x86[\(index)]: rip \(String(segs[SegReg.cs].selector, radix: 16)):\(String(rip, radix: 16)) rsp \(String(r[4], radix: 16)) if=\(flags & RFlag.ifl != 0) \(activity) icount \(instructions) cr3 \(String(cr3, radix: 16))\n"
        writeDiagnostic(msg)
    }
}
