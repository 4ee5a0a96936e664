; A multiboot guest for -smp 2: the boot CPU enables its local APIC (xAPIC MMIO), copies a
; real-mode trampoline to 0x8000, starts CPU 1 with INIT + STARTUP IPIs (vector 0x08), and waits
; for the AP to set a flag. The AP prints a line and parks in HLT. Exit through isa-debug-exit
; (iobase 0xf4): 0x10 when the AP came up (status 33), 0x02 on timeout (status 5).
bits 32
org 0x100000
mb_header:
  dd 0x1BADB002
  dd 0x00010000
  dd -(0x1BADB002 + 0x00010000)
  dd mb_header
  dd 0x100000
  dd 0
  dd 0
  dd start

start:
  mov esp, 0x90000
  mov byte [0x7000], 0
  ; copy the trampoline
  mov esi, tramp_start
  mov edi, 0x8000
  mov ecx, tramp_end - tramp_start
  rep movsb
  ; enable the local APIC: SVR = 0x1FF
  mov dword [0xFEE000F0], 0x1FF
  ; INIT to APIC ID 1, then two STARTUP IPIs at 0x8000
  mov dword [0xFEE00310], 1 << 24
  mov dword [0xFEE00300], 0x00004500
  mov dword [0xFEE00310], 1 << 24
  mov dword [0xFEE00300], 0x00004608
  mov dword [0xFEE00310], 1 << 24
  mov dword [0xFEE00300], 0x00004608
  mov ecx, 200000000
.wait:
  cmp byte [0x7000], 1
  je .up
  pause
  loop .wait
  mov dx, 0xf4
  mov al, 0x02
  out dx, al
  hlt
.up:
  mov esi, bspmsg
  mov dx, 0x3f8
.p: lodsb
  test al, al
  jz .done
  out dx, al
  jmp .p
.done:
  mov dx, 0xf4
  mov al, 0x10
  out dx, al
  hlt

bspmsg: db "smp32: CPU 1 is up", 10, 0

bits 16
tramp_start:
  cli
  mov ax, cs
  mov ds, ax
  mov si, tramp_msg - tramp_start
  mov dx, 0x3f8
.l: lodsb
  test al, al
  jz .e
  out dx, al
  jmp .l
.e:
  xor ax, ax
  mov ds, ax
  mov byte [0x7000], 1
.park:
  hlt
  jmp .park
tramp_msg: db "smp32: hello from CPU 1", 10, 0
tramp_end:
