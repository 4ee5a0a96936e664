; vmrun's Linux loader option ROM (fw_cfg file genroms/linuxboot_dma.bin), for -bios with -kernel:
; the job of QEMU's linuxboot_dma.bin, written from the boot protocol (Documentation/x86/boot.rst)
; and the fw_cfg interface. Assembled with `nasm -f bin`; the bytes are embedded in
; LinuxBootROM.swift (MachineTests checks they match this source when nasm is installed).
;
; The BIOS runs the ROM's init vector (a far return: nothing to set up) and, at boot, its PnP boot
; entry vector (BEV), found through the PnP header. The BEV reads from fw_cfg: the patched real-mode
; setup to SETUP_ADDR, the initrd (moved below the top of RAM the BIOS reports with INT 15h E801,
; which excludes what the BIOS reserved up there), the protected-mode kernel to KERNEL_ADDR, and the
; command line to CMDLINE_ADDR; then it enters the setup code at SETUP_ADDR/16 + 0x20 : 0 with the
; data segments at the setup segment and the stack below the command line, as the boot protocol
; says. Blobs go through fw_cfg DMA (the descriptor lives at 0:DESC, below the setup area), small
; values through the data port.

bits 16
org 0

FW_CTL      equ 0x510
FW_DATA     equ 0x511
FW_DMA_LOW  equ 0x518
KERNEL_ADDR equ 0x07
KERNEL_SIZE equ 0x08
INITRD_ADDR equ 0x0a
INITRD_SIZE equ 0x0b
KERNEL_DATA equ 0x11
INITRD_DATA equ 0x12
CMDLINE_ADDR equ 0x13
CMDLINE_SIZE equ 0x14
CMDLINE_DATA equ 0x15
SETUP_ADDR  equ 0x16
SETUP_SIZE  equ 0x17
SETUP_DATA  equ 0x18
DESC        equ 0x6000          ; DMA descriptor (16 bytes) and scratch, linear = 0:DESC
SCRATCH     equ 0x6010

start:
    dw 0xaa55
    db 2                        ; size in 512-byte blocks
    retf                        ; init vector (offset 3)
    times 0x18 - ($ - $$) db 0
    dw 0                        ; no PCI data structure
    dw pnp                      ; PnP expansion header

pnp:
    db '$PnP'
    db 1                        ; revision
    db (pnp_end - pnp) / 16     ; length in 16-byte units
    dw 0                        ; next header
    db 0                        ; reserved
    db 0                        ; checksum (not checked by SeaBIOS)
    dd 0                        ; device id
    dw manufacturer
    dw product
    db 0, 0, 0, 0               ; device type, indicators
    dw 0                        ; boot connection vector
    dw 0                        ; disconnect vector
    dw bev                      ; bootstrap entry vector
    dw 0                        ; reserved
    dw 0                        ; static resource information
pnp_end:

manufacturer: db 'vmrun', 0
product:      db 'Linux loader DMA', 0

; eax = fw_cfg key -> eax = the item's first 4 bytes (little-endian). Clobbers cx, dx, di, es.
read32:
    mov dx, FW_CTL
    out dx, ax
    xor ax, ax
    mov es, ax
    mov di, SCRATCH
    mov cx, 4
    mov dx, FW_DATA
    rep insb
    mov eax, [es:SCRATCH]
    ret

; eax = key, ebx = physical destination, ecx = length: DMA read (select + read). Clobbers eax, dx.
dma_read:
    test ecx, ecx
    jz .done
    shl eax, 16
    or eax, 0x0a                ; SELECT | READ
    bswap eax
    mov [DESC], eax
    bswap ecx
    mov [DESC + 4], ecx
    bswap ecx
    mov dword [DESC + 8], 0     ; address, big-endian: high half
    bswap ebx
    mov [DESC + 12], ebx        ; low half
    bswap ebx
    mov eax, DESC
    bswap eax
    mov dx, FW_DMA_LOW
    out dx, eax                 ; starts the transfer
.wait:
    mov eax, [DESC]
    bswap eax
    and eax, 0xfffffffe         ; everything but the error bit clears when done
    jnz .wait
.done:
    ret

bev:
    cli
    cld
    xor ax, ax
    mov ds, ax                  ; DS = 0 for DESC and the saved values below

    mov eax, SETUP_ADDR
    call read32
    mov [setup_addr], eax
    mov eax, SETUP_SIZE
    call read32
    mov ecx, eax
    mov ebx, [setup_addr]
    mov eax, SETUP_DATA
    call dma_read

    mov eax, [setup_addr]
    shr eax, 4
    mov fs, ax                  ; FS = setup segment (the header at FS:0x1f1)
    cmp word [fs:0x206], 0x203  ; protocols before 2.03 have no initrd_addr_max
    jae .have_max
    mov dword [fs:0x22c], 0x37ffffff
.have_max:

    mov eax, INITRD_SIZE
    call read32
    mov [initrd_size], eax
    test eax, eax
    jz .kernel
    mov eax, INITRD_ADDR
    call read32
    mov [initrd_addr], eax
    ; Move the initrd below the top of RAM the BIOS reports (it reserves its tables up there).
    mov ax, 0xe801
    xor bx, bx
    xor cx, cx
    xor dx, dx
    int 0x15
    jc .load_initrd
    test cx, cx
    jnz .e801
    test dx, dx
    jnz .e801
    mov cx, ax
    mov dx, bx
.e801:
    movzx eax, dx               ; 64 KiB blocks above 16 MiB
    test eax, eax
    jz .below16m
    add eax, 256
    shl eax, 16
    jmp .top
.below16m:
    movzx eax, cx               ; KiB above 1 MiB
    add eax, 1024
    shl eax, 10
.top:
    sub eax, [initrd_size]
    and eax, 0xfffff000
    mov edx, [fs:0x22c]         ; initrd_addr_max
    cmp eax, edx
    jbe .fits
    mov eax, edx
    sub eax, [initrd_size]
    inc eax
    and eax, 0xfffff000
.fits:
    mov [initrd_addr], eax
    mov [fs:0x218], eax         ; ramdisk_image
.load_initrd:
    mov ebx, [initrd_addr]
    mov ecx, [initrd_size]
    mov eax, INITRD_DATA
    call dma_read

.kernel:
    mov eax, KERNEL_ADDR
    call read32
    mov ebx, eax
    push ebx
    mov eax, KERNEL_SIZE
    call read32
    mov ecx, eax
    pop ebx
    mov eax, KERNEL_DATA
    call dma_read

    mov eax, CMDLINE_ADDR
    call read32
    mov [cmdline_addr], eax
    mov eax, CMDLINE_SIZE
    call read32
    mov ecx, eax
    mov ebx, [cmdline_addr]
    mov eax, CMDLINE_DATA
    call dma_read

    ; Enter the setup code: segments = setup segment, SP just below the command line.
    mov ebx, [cmdline_addr]
    sub ebx, [setup_addr]
    sub ebx, 16
    mov eax, [setup_addr]
    shr eax, 4
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov esp, ebx
    add ax, 0x20
    push ax                     ; CS
    push word 0                 ; IP
    xor eax, eax
    xor ebx, ebx
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor ebp, ebp
    retf

; Saved values live in low RAM (the ROM itself is read-only once the BIOS has shadowed it).
setup_addr   equ SCRATCH + 4
initrd_addr  equ SCRATCH + 8
initrd_size  equ SCRATCH + 12
cmdline_addr equ SCRATCH + 16

    times 1023 - ($ - $$) db 0
    db 0                        ; checksum, set by LinuxBootROM.swift
