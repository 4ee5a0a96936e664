import ImageFormats

func runCheck(_ args: [String]) throws -> Int32 {
    printError("check: not implemented yet")
    return 1
}
