// nbdserver: a qemu-nbd replacement. All the work is in Program.swift and the libraries.
import Glibc

exit(Program.main(CommandLine.arguments))
