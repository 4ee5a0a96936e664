print("imgtool")
