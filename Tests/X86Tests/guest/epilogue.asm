; Reset vector and padding to 64 KiB.
times 0xFFF0 - ($ - $$) db 0xCC
bits 16
reset_vector:
    jmp 0xF000:start16
times 0x10000 - ($ - $$) db 0xCC
