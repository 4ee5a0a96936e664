; A 64 KiB BIOS image for -bios: real-mode code at F000:0000 reached from the reset vector. It
; prints a line on COM1, reads the i440FX's vendor/device ID through 0xCF8/0xCFC, echoes one byte
; from the UART if the test sends one (with a bounded wait), and exits through isa-debug-exit
; (iobase 0xf4): 0x10 (status 33) on success, 0x01 (status 3) on failure. With HALT defined it
; halts forever instead of exiting (for monitor tests).
bits 16
org 0
start:
  mov ax, cs
  mov ds, ax
  mov dx, 0x3f8
  mov si, msg
.loop: lodsb
  test al, al
  jz .done
  out dx, al
  jmp .loop
.done:
  mov dx, 0xcf8
  mov eax, 0x80000000
  out dx, eax
  mov dx, 0xcfc
  in eax, dx
  cmp eax, 0x12378086
  jne fail
%ifdef HALT
  cli
.forever: hlt
  jmp .forever
%endif
  mov dx, 0xf4
  mov al, 0x10
  out dx, al
  hlt
fail:
  mov dx, 0xf4
  mov al, 0x01
  out dx, al
  hlt
msg: db "Hello from real mode", 10, 0
times 0xfff0 - ($-$$) db 0
  jmp 0xf000:start
times 0x10000 - ($-$$) db 0
