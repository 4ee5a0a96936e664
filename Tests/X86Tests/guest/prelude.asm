; Test guest prelude: a 64 KiB BIOS image. Starts at the reset vector in real mode and, depending on
; MODE_REAL / MODE_PM32 / MODE_LM64, switches to 32-bit protected mode or to long mode (identity
; paging of the first GiB with 2 MiB pages), sets up an IDT whose exception handlers print the
; vector, error code (and CR2 for #PF) and resume at [RECOVER], then jumps to test_main.
; Output goes to COM1; `EXIT` writes isa-debug-exit.
;
; RAM layout: 0x7000 stack (real), 0x8000 register save area, 0x8100 flag mask, 0x8200 recover
; address, 0x9000 IDT, 0x10000 page tables, 0x90000 stack (protected/long).

%define SAVE 0x8000
%define FLAGMASK 0x8100
%define RECOVER 0x8200
%define IDT 0x9000

%macro EXIT 0
    mov al, 0
    out 0xF4, al
    hlt
%endmacro

bits 16
org 0xF0000

start16:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7000
    mov dword [FLAGMASK], 0x8D5
    mov dword [FLAGMASK+4], 0
    mov dword [RECOVER], 0
    mov dword [RECOVER+4], 0
%ifdef MODE_REAL
    jmp test_main
%else
    o32 lgdt [cs:gdt_desc - 0xF0000]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    jmp dword 0x08:pm32
%endif

align 8
gdt:
    dq 0
    dq 0x00CF9B000000FFFF   ; 0x08 code32
    dq 0x00CF93000000FFFF   ; 0x10 data
    dq 0x00AF9B000000FFFF   ; 0x18 code64
    dq 0x00009B0F0000FFFF   ; 0x20 code16, base 0xF0000
    dq 0x000093000000FFFF   ; 0x28 data16
    dq 0x00CFFB000000FFFF   ; 0x30 user code32 (DPL3)
    dq 0x00CFF3000000FFFF   ; 0x38 user data (DPL3)
    dq 0x00AFFB000000FFFF   ; 0x40 user code64 (DPL3)
    dq 0, 0                 ; 0x48 TSS (filled at run time in RAM copy)
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt

bits 32
pm32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov esp, 0x90000
%ifdef MODE_PM32
    call setup_idt32
    jmp test_main
%else
    ; Page tables: PML4 0x10000, PDPT 0x11000, PD 0x12000 (1 GiB of 2 MiB pages).
    mov edi, 0x10000
    xor eax, eax
    mov ecx, 3 * 1024
    rep stosd
    mov dword [0x10000], 0x11003
    mov dword [0x11000], 0x12003
    mov edi, 0x12000
    mov eax, 0x83
    mov ecx, 512
.pd:
    mov [edi], eax
    mov dword [edi+4], 0
    add eax, 0x200000
    add edi, 8
    loop .pd
    mov eax, cr4
    or eax, 0x20 | 0x200
    mov cr4, eax
    mov eax, 0x10000
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100 | 0x800 | 1
    wrmsr
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    jmp 0x18:lm64

bits 64
lm64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov rsp, 0x90000
    call setup_idt64
    jmp test_main

; --- 64-bit library -------------------------------------------------------------------------
putc64:
    push rdx
    mov dx, 0x3F8
    out dx, al
    pop rdx
    ret

; prints RAX as 16 hex digits
hex64:
    push rax
    push rbx
    push rcx
    mov rbx, rax
    mov ecx, 16
.l: rol rbx, 4
    mov al, bl
    and al, 0xF
    cmp al, 10
    jb .d
    add al, 7
.d: add al, '0'
    call putc64
    dec ecx
    jnz .l
    pop rcx
    pop rbx
    pop rax
    ret

; prints the zero-terminated string at RSI
puts64:
    push rax
    push rsi
.l: lodsb
    test al, al
    jz .e
    call putc64
    jmp .l
.e: pop rsi
    pop rax
    ret

; prints all GPRs and RFLAGS & [FLAGMASK]; preserves everything
dump64:
    pushfq
    mov [SAVE+0], rax
    mov [SAVE+8], rcx
    mov [SAVE+16], rdx
    mov [SAVE+24], rbx
    lea rax, [rsp+16]
    mov [SAVE+32], rax
    mov [SAVE+40], rbp
    mov [SAVE+48], rsi
    mov [SAVE+56], rdi
    mov [SAVE+64], r8
    mov [SAVE+72], r9
    mov [SAVE+80], r10
    mov [SAVE+88], r11
    mov [SAVE+96], r12
    mov [SAVE+104], r13
    mov [SAVE+112], r14
    mov [SAVE+120], r15
    mov rax, [rsp]
    and rax, [FLAGMASK]
    mov [SAVE+128], rax
    xor ecx, ecx
.l: lea rsi, [rel regnames]
    lea rsi, [rsi + rcx*4]
    call puts64
    mov al, '='
    call putc64
    mov rax, [SAVE + rcx*8]
    call hex64
    mov al, 10
    call putc64
    inc ecx
    cmp ecx, 17
    jb .l
    mov rax, [SAVE+0]
    mov rcx, [SAVE+8]
    mov rsi, [SAVE+48]
    popfq
    ret

; prints "RAX RDX FLAGS" on one line; preserves everything
pf64:
    pushfq
    push rax
    call hex64
    mov al, ' '
    call putc64
    mov rax, rdx
    call hex64
    mov al, ' '
    call putc64
    mov rax, [rsp+8]
    and rax, [FLAGMASK]
    call hex64
    mov al, 10
    call putc64
    pop rax
    popfq
    ret

regnames: db "RAX",0,"RCX",0,"RDX",0,"RBX",0,"RSP",0,"RBP",0,"RSI",0,"RDI",0
          db "R8 ",0,"R9 ",0,"R10",0,"R11",0,"R12",0,"R13",0,"R14",0,"R15",0,"FL ",0

; --- 64-bit exceptions ------------------------------------------------------------------------
setup_idt64:
    mov rdi, IDT
    xor ecx, ecx
.l: lea rsi, [rel isr_table]
    mov rax, [rsi + rcx*8]
    mov [rdi], ax
    mov word [rdi+2], 0x18
    mov word [rdi+4], 0x8E00
    shr rax, 16
    mov [rdi+6], ax
    shr rax, 16
    mov [rdi+8], eax
    mov dword [rdi+12], 0
    add rdi, 16
    inc ecx
    cmp ecx, 33
    jb .l
    ; vector 0x80: a trap gate callable from ring 3
    lea rax, [rel isr_soft]
    mov rdi, IDT + 0x80*16
    mov [rdi], ax
    mov word [rdi+2], 0x18
    mov word [rdi+4], 0xEF00
    shr rax, 16
    mov [rdi+6], ax
    shr rax, 16
    mov [rdi+8], eax
    mov dword [rdi+12], 0
    lidt [rel idt_desc64]
    ret
idt_desc64:
    dw 256*16-1
    dq IDT

%assign v 0
%rep 33
isr %+ v:
%if v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21
%else
    push 0
%endif
    push v
    jmp isr_common
%assign v v+1
%endrep

isr_table:
%assign v 0
%rep 33
    dq isr %+ v
%assign v v+1
%endrep

s_exc: db "EXC ",0
s_err: db " ERR ",0
s_cr2: db " CR2 ",0
s_rip: db " RIP ",0
s_soft: db "SOFT ",0

isr_common:
    push rax
    push rsi
    lea rsi, [rel s_exc]
    call puts64
    mov rax, [rsp+16]
    call hex64
    lea rsi, [rel s_err]
    call puts64
    mov rax, [rsp+24]
    call hex64
    cmp qword [rsp+16], 14
    jne .nocr2
    lea rsi, [rel s_cr2]
    call puts64
    mov rax, cr2
    call hex64
.nocr2:
    mov al, 10
    call putc64
    mov rax, [RECOVER]
    test rax, rax
    jnz .go
    EXIT
.go:
    mov [rsp+32], rax
    mov qword [rsp+40], 0x18       ; resume in kernel code
    mov qword [rsp+64], 0x10
    pop rsi
    pop rax
    add rsp, 16
    iretq

isr_soft:
    push rsi
    lea rsi, [rel s_soft]
    call puts64
    call dump64
    pop rsi
    iretq
%endif

%ifdef MODE_PM32
bits 32
putc32:
    push edx
    mov dx, 0x3F8
    out dx, al
    pop edx
    ret
hex32:
    push eax
    push ebx
    push ecx
    mov ebx, eax
    mov ecx, 8
.l: rol ebx, 4
    mov al, bl
    and al, 0xF
    cmp al, 10
    jb .d
    add al, 7
.d: add al, '0'
    call putc32
    loop .l
    pop ecx
    pop ebx
    pop eax
    ret
puts32:
    push eax
    push esi
.l: lodsb
    test al, al
    jz .e
    call putc32
    jmp .l
.e: pop esi
    pop eax
    ret
dump32:
    pushfd
    pushad
    mov esi, esp
    mov ecx, 7
    xor edx, edx
.l: push esi
    mov esi, regnames32
    lea esi, [esi + edx*4]
    call puts32
    pop esi
    mov al, '='
    call putc32
    mov eax, [esi + ecx*4]
    cmp edx, 4
    jne .n
    add eax, 8
.n: cmp edx, 8
    jne .n2
    mov eax, [esi + 32]
    and eax, [FLAGMASK]
.n2: call hex32
    mov al, 10
    call putc32
    inc edx
    dec ecx
    cmp edx, 9
    jb .l
    popad
    popfd
    ret
regnames32: db "EAX",0,"ECX",0,"EDX",0,"EBX",0,"ESP",0,"EBP",0,"ESI",0,"EDI",0,"FL ",0

setup_idt32:
    mov edi, IDT
    xor ecx, ecx
.l: mov eax, [isr_table32 + ecx*4]
    mov [edi], ax
    mov word [edi+2], 0x08
    mov word [edi+4], 0x8E00
    shr eax, 16
    mov [edi+6], ax
    add edi, 8
    inc ecx
    cmp ecx, 32
    jb .l
    lidt [idt_desc32]
    ret
idt_desc32:
    dw 256*8-1
    dd IDT
%assign v 0
%rep 32
isr32_ %+ v:
%if v == 8 || (v >= 10 && v <= 14) || v == 17
%else
    push 0
%endif
    push v
    jmp isr32_common
%assign v v+1
%endrep
isr_table32:
%assign v 0
%rep 32
    dd isr32_ %+ v
%assign v v+1
%endrep
s_exc32: db "EXC ",0
s_err32: db " ERR ",0
s_cr232: db " CR2 ",0
isr32_common:
    push eax
    push esi
    mov esi, s_exc32
    call puts32
    mov eax, [esp+8]
    call hex32
    mov esi, s_err32
    call puts32
    mov eax, [esp+12]
    call hex32
    cmp dword [esp+8], 14
    jne .n
    mov esi, s_cr232
    call puts32
    mov eax, cr2
    call hex32
.n: mov al, 10
    call putc32
    mov eax, [RECOVER]
    test eax, eax
    jnz .go
    EXIT
.go:
    mov [esp+16], eax
    pop esi
    pop eax
    add esp, 8
    iretd
%endif

%ifdef MODE_REAL
bits 16
putc16:
    push dx
    mov dx, 0x3F8
    out dx, al
    pop dx
    ret
hex16:          ; prints EAX
    push eax
    push ebx
    push cx
    mov ebx, eax
    mov cx, 8
.l: rol ebx, 4
    mov al, bl
    and al, 0xF
    cmp al, 10
    jb .d
    add al, 7
.d: add al, '0'
    call putc16
    dec cx
    jnz .l
    pop cx
    pop ebx
    pop eax
    ret
dump16:
    pushfd
    pushad
    mov bp, sp
    xor si, si
.l: mov al, [cs:regnames16 - 0xF0000 + si]
    call putc16
    mov al, [cs:regnames16 - 0xF0000 + si + 1]
    call putc16
    mov al, '='
    call putc16
    mov bx, si
    shr bx, 1
    neg bx
    add bx, 7
    shl bx, 2
    mov di, bx
    mov eax, [ss:bp + di]
    call hex16
    mov al, 10
    call putc16
    add si, 2
    cmp si, 16
    jb .l
    mov eax, [ss:bp+32]
    and eax, [FLAGMASK]
    push ax
    mov al, 'F'
    call putc16
    mov al, '='
    call putc16
    pop ax
    call hex16
    mov al, 10
    call putc16
    popad
    popfd
    ret
regnames16: db "AXCXDXBXSPBPSIDI"
%endif

bits 64
