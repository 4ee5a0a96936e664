// Choosing the accelerator from -accel / -enable-kvm / -machine accel=, with the one stderr line the
// user needs to know what runs their guest.
//
// Nothing asked: KVM when /dev/kvm is usable and is not this host's paravirtual nested KVM (module
// kvm_pvm, which hangs on unmodified kernels), else the interpreter. Asked for a list ("kvm:tcg"):
// the first that initialises, as QEMU does. KVM asked for explicitly on a PVM host is used, with a
// warning.
public enum AcceleratorChoice {
    public struct ChoiceError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public static let known = ["kvm", "tcg"]

    /// `requested` is nil when the user named none.
    public static func make(requested: [String]?, cpus: Int, cpuModel: String) throws -> any Accelerator {
        let makeInterpreter: () throws -> any Accelerator = { try Self.makeInterpreter(cpus: cpus, cpuModel: cpuModel) }
        guard let requested, !requested.isEmpty else {
            if KVMHost.isPVM {
                Diagnostics.info("info: /dev/kvm is a paravirtual nested KVM (kvm_pvm) that cannot run unmodified guests; using the interpreter (-accel tcg)")
                return try makeInterpreter()
            }
            if KVMHost.deviceUsable, let kvm = try? KVMAccelerator() {
                Diagnostics.info("info: using KVM")
                return kvm
            }
            Diagnostics.info("info: KVM is not available; using the interpreter (-accel tcg)")
            return try makeInterpreter()
        }
        var lastError: Error? = nil
        for (i, name) in requested.enumerated() {
            do {
                switch name {
                case "kvm":
                    if KVMHost.isPVM {
                        Diagnostics.warn("/dev/kvm is a paravirtual nested KVM (kvm_pvm): small guests run, unmodified kernels such as Linux hang")
                    }
                    do { return try KVMAccelerator() } catch let e as KVMError {
                        throw ChoiceError(message: "\(e)\n\(Diagnostics.programName): failed to initialize kvm: \(String(cString: strerror(e.errno)))")
                    }
                case "tcg":
                    // QEMU's TCG has no 'host' model; only our fallback without -accel maps it to max.
                    if cpuModel.split(separator: ",").first == "host" {
                        throw ChoiceError(message: "CPU model 'host' requires KVM or HVF")
                    }
                    return try makeInterpreter()
                default: throw ChoiceError(message: "invalid accelerator \(name)")
                }
            } catch {
                lastError = error
                if i + 1 < requested.count { Diagnostics.error("\(error)") }
            }
        }
        throw lastError ?? ChoiceError(message: "no accelerator found")
    }

    static func makeInterpreter(cpus: Int, cpuModel: String) throws -> any Accelerator {
        let model: CPUModel
        do { model = try CPUModel(parsing: cpuModel == "host" ? "max" : cpuModel) } catch {
            throw ChoiceError(message: "\(error)")
        }
        for w in model.warnings { Diagnostics.warn(w) }
        return InterpreterAccelerator(cpuCount: cpus, model: model)
    }
}

import Glibc
import X86
