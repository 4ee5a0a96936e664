// swift-tools-version:6.0
// The package layout is fixed by the mission: one block library (ImageFormats) and three thin programs.
import PackageDescription

let package = Package(
    name: "vmtoolkit",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "ImageFormats", targets: ["ImageFormats"]),
        .executable(name: "imgtool", targets: ["imgtool"]),
        .library(name: "X86", targets: ["X86"]),
        .library(name: "Machine", targets: ["Machine"]),
        .executable(name: "vmrun", targets: ["vmrun"]),
    ],
    targets: [
        // C shim for the Linux calls Swift's Glibc module hides (_GNU_SOURCE names, ioctl macros).
        .target(name: "CLinux", cSettings: [.define("_GNU_SOURCE")]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),

        .target(name: "ImageFormats", dependencies: ["CLinux", "CZlib", "CZstd"]),
        .executableTarget(name: "imgtool", dependencies: ["ImageFormats", "CLinux"]),

        // The x86 interpreter CPU (vmrun's accelerator when KVM is not usable).
        .target(name: "X86"),

        .testTarget(name: "ImageFormatsTests", dependencies: ["ImageFormats"]),
        .testTarget(name: "X86Tests", dependencies: ["X86"], exclude: ["guest"]),
        // Runs the built imgtool binary side by side with qemu-img.
        .testTarget(name: "imgtoolTests", dependencies: ["imgtool"]),

        // The virtual machine (boards, devices, firmware, accelerators, monitor) and its thin front end.
        .target(name: "Machine", dependencies: ["X86", "ImageFormats", "CLinux"], exclude: ["README.md"]),
        .executableTarget(name: "vmrun", dependencies: ["Machine", "ImageFormats"]),
        .testTarget(name: "MachineTests", dependencies: ["Machine", "ImageFormats", "X86"]),
        .testTarget(name: "vmrunTests", dependencies: ["Machine"], exclude: ["Guests", "Fixtures"]),
    ]
)
