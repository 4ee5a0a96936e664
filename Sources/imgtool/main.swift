// imgtool: qemu-img's command line on top of the ImageFormats library. This file only starts the
// program; Support/Dispatch.swift picks the subcommand, each subcommand lives in Commands/, and all
// image work is done by the library.
import Glibc

exit(runMain())
