// swift-tools-version:6.0
// The package layout is fixed by the mission: one block library (ImageFormats) and three thin programs.
import PackageDescription

// Release builds of the programs link the Swift runtime statically (-static-stdlib): loading the
// shared libswiftCore, _Concurrency, _StringProcessing, dispatch... costs ~2.5 MB of RSS at start.
// Debug builds stay dynamic. The flags must stay off the test bundle, which links the shared
// XCTest and Foundation: so no test target depends on an executable target (see imgtoolTests).
// With it, three link options worth ~0.8 MB more (imgtool info 8.6 -> 7.8 MB, binary evicted first):
// lld (the toolchain's ld.lld) for -z pack-relative-relocs, which shrinks the 480 KB of relative
// relocations that ld.so reads at start to 3 KB (DT_RELR, glibc >= 2.36), and --no-export-dynamic,
// which undoes the -export-dynamic of static-stdlib-args.lnk: nothing looks our symbols up, and
// exporting them put 230 KB of .dynsym/.dynstr/.gnu.hash in every symbol lookup ld.so makes.
// And the functions a program runs on common paths go first in its .text, packed, so that a run
// touches few page-cache folios of the binary (imgtool info ~7.8 -> ~6.5 MB): scripts/link-order.sh.
func releaseLink(_ program: String) -> [LinkerSetting] {
    let order = Context.packageDirectory + "/scripts/link-order/\(program).txt"
    return [.unsafeFlags(["-static-stdlib", "-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
                          "-Xlinker", "--no-export-dynamic",
                          "-Xlinker", "--symbol-ordering-file=\(order)", "-Xlinker", "--no-warn-symbol-ordering"],
                         .when(configuration: .release))]
}

let package = Package(
    name: "vmtoolkit",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "ImageFormats", targets: ["ImageFormats"]),
        .executable(name: "imgtool", targets: ["imgtool"]),
        .executable(name: "nbdserver", targets: ["nbdserver"]),
        .library(name: "X86", targets: ["X86"]),
        .library(name: "Machine", targets: ["Machine"]),
        .executable(name: "vmrun", targets: ["vmrun"]),
    ],
    targets: [
        // C shim for the Linux calls Swift's Glibc module hides (_GNU_SOURCE names, ioctl macros).
        .target(name: "CLinux", cSettings: [.define("_GNU_SOURCE")]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // A faster raw-deflate compressor than zlib for convert -c (the output is ordinary deflate).
        .systemLibrary(name: "CDeflate", pkgConfig: "libdeflate", providers: [.apt(["libdeflate-dev"])]),

        .target(name: "ImageFormats", dependencies: ["CLinux", "CZlib", "CZstd", "CDeflate", "NBD"]),
        .executableTarget(name: "imgtool", dependencies: ["ImageFormats", "CLinux"], linkerSettings: releaseLink("imgtool")),

        // The x86 interpreter CPU (vmrun's accelerator when KVM is not usable).
        .target(name: "X86", dependencies: ["CX86Fast"]),
        // The interpreter's fast tier: threaded dispatch, which Swift cannot express (FastTier.swift).
        .target(name: "CX86Fast"),

        // Helpers the ImageFormats, imgtool and nbdserver tests share (temporary directories, running programs).
        .target(name: "TestSupport", path: "Tests/Support"),
        .testTarget(name: "ImageFormatsTests", dependencies: ["ImageFormats", "TestSupport"]),
        .testTarget(name: "X86Tests", dependencies: ["X86"], exclude: ["guest"]),
        // Runs the built imgtool binary side by side with qemu-img. Like vmrunTests and
        // nbdserverTests it finds the binary next to the test bundle (swift build --build-tests and
        // swift test build every product) and does not depend on the executable target: that would
        // link imgtool's code, and its release -static-stdlib, into the XCTest bundle, which cannot
        // link against a static Swift runtime (no static XCTest; bench/x86-speed.sh builds release tests).
        .testTarget(name: "imgtoolTests", dependencies: ["TestSupport"]),

        // NBD: the wire protocol (both peers), used by nbdserver and ImageFormats' nbd driver.
        // GnuTLS is dlopen()ed on first TLS use, not linked (~2.6 MB RSS saved); its headers
        // (libgnutls28-dev) are still needed to build, libgnutls30 only to run TLS.
        .target(name: "CGnuTLS"),
        .target(name: "NBD", dependencies: ["CGnuTLS"]),
        .executableTarget(name: "nbdserver", dependencies: ["ImageFormats", "NBD", "CLinux"], linkerSettings: releaseLink("nbdserver")),
        .testTarget(name: "NBDTests", dependencies: ["NBD"]),
        .testTarget(name: "nbdserverTests", dependencies: ["NBD", "ImageFormats", "TestSupport"]),  // runs the nbdserver binary

        // The virtual machine (boards, devices, firmware, accelerators, monitor) and its thin front end.
        .target(name: "Machine", dependencies: ["X86", "ImageFormats", "CLinux"], exclude: ["README.md", "Firmware/LinuxBootROM.asm"]),
        .executableTarget(name: "vmrun", dependencies: ["Machine", "ImageFormats"], linkerSettings: releaseLink("vmrun")),
        .testTarget(name: "MachineTests", dependencies: ["Machine", "ImageFormats", "X86"]),
        .testTarget(name: "vmrunTests", dependencies: ["Machine"], exclude: ["Guests", "Fixtures"]),
    ]
)
