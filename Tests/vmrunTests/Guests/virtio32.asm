; A tiny multiboot (a.out kludge) guest for KVM and QEMU TCG: flat 32-bit code at 1 MiB that
; prints a banner, finds the virtio-blk function at 00:02.0, enables its memory BAR, drives the
; modern virtio-pci interface by hand (reset, features, one 8-entry queue), reads sector 0 and
; prints its first 16 bytes, writes "WRITTEN-BY-GUEST" to sector 1, then exits through
; isa-debug-exit (iobase 0xf4): 0x10 on success (status 33), 0x01 + step on failure.
bits 32
org 0x100000
%define QDESC  0x200000
%define QAVAIL 0x201000
%define QUSED  0x202000
%define REQ    0x203000
%define DATA   0x204000
%define STAT   0x205000

mb_header:
  dd 0x1BADB002
  dd 0x00010000
  dd -(0x1BADB002 + 0x00010000)
  dd mb_header        ; header_addr
  dd 0x100000         ; load_addr
  dd 0                ; load_end_addr: whole file
  dd 0                ; bss_end_addr
  dd start            ; entry_addr

start:
  mov esp, 0x90000
  mov esi, banner
  call puts
  ; PCI 00:02.0: vendor/device must be 1af4:1042 (modern virtio-blk) or 1af4:1001
  mov eax, 0x80001000
  call pci_read
  cmp ax, 0x1af4
  mov bl, 2
  jne fail
  ; BAR4 (0x20) low | BAR5 high -> ebp = BAR4 base (below 4 GiB here)
  mov eax, 0x80001020
  call pci_read
  and eax, 0xfffffff0
  mov ebp, eax
  test ebp, ebp
  mov bl, 3
  jz fail
  ; command register: memory + bus master
  mov eax, 0x80001004
  mov dx, 0xcf8
  out dx, eax
  mov dx, 0xcfc
  mov ax, 0x0006
  out dx, ax
  ; reset, ACKNOWLEDGE | DRIVER
  mov byte [ebp+0x14], 0
  mov byte [ebp+0x14], 1
  mov byte [ebp+0x14], 3
  ; device features high word must have VERSION_1
  mov dword [ebp+0x00], 1
  mov eax, [ebp+0x04]
  test eax, 1
  mov bl, 4
  jz fail
  mov dword [ebp+0x08], 1
  mov dword [ebp+0x0c], 1      ; driver features: VERSION_1 only
  mov dword [ebp+0x08], 0
  mov dword [ebp+0x0c], 0
  mov byte [ebp+0x14], 0x0b    ; FEATURES_OK
  mov al, [ebp+0x14]
  test al, 8
  mov bl, 5
  jz fail
  ; queue 0, size 8
  mov word [ebp+0x16], 0
  mov word [ebp+0x18], 8
  mov dword [ebp+0x20], QDESC
  mov dword [ebp+0x24], 0
  mov dword [ebp+0x28], QAVAIL
  mov dword [ebp+0x2c], 0
  mov dword [ebp+0x30], QUSED
  mov dword [ebp+0x34], 0
  mov word [ebp+0x1c], 1
  mov byte [ebp+0x14], 0x0f    ; DRIVER_OK
  ; clear rings
  mov edi, QDESC
  mov ecx, 0x3000 / 4
  xor eax, eax
  rep stosd
  ; request 1: read sector 0
  mov dword [REQ], 0
  mov dword [REQ+4], 0
  mov dword [REQ+8], 0
  mov dword [REQ+12], 0
  mov byte [STAT], 0xff
  call build_chain_read
  mov word [QAVAIL+4], 0       ; ring[0] = head 0
  mov word [QAVAIL+2], 1       ; idx = 1
  mov word [ebp+0x3000], 0     ; notify queue 0
  mov ax, 1
  call wait_used
  cmp byte [STAT], 0
  mov bl, 6
  jne fail
  ; print the first 16 bytes of sector 0
  mov esi, DATA
  mov ecx, 16
  mov dx, 0x3f8
.p: lodsb
  out dx, al
  loop .p
  mov al, 10
  out dx, al
  ; request 2: write sector 1
  mov dword [REQ], 1
  mov dword [REQ+8], 1
  mov esi, wmsg
  mov edi, DATA
  mov ecx, 16
  rep movsb
  mov byte [STAT], 0xff
  call build_chain_write
  mov word [QAVAIL+6], 0       ; ring[1] = head 0
  mov word [QAVAIL+2], 2
  mov word [ebp+0x3000], 0
  mov ax, 2
  call wait_used
  cmp byte [STAT], 0
  mov bl, 7
  jne fail
  mov esi, done
  call puts
  mov dx, 0xf4
  mov al, 0x10
  out dx, al
  hlt

build_chain_read:
  mov dword [QDESC+0], REQ
  mov dword [QDESC+4], 0
  mov dword [QDESC+8], 16
  mov word [QDESC+12], 1       ; NEXT
  mov word [QDESC+14], 1
  mov dword [QDESC+16], DATA
  mov dword [QDESC+20], 0
  mov dword [QDESC+24], 512
  mov word [QDESC+28], 3       ; NEXT | WRITE
  mov word [QDESC+30], 2
  mov dword [QDESC+32], STAT
  mov dword [QDESC+36], 0
  mov dword [QDESC+40], 1
  mov word [QDESC+44], 2       ; WRITE
  mov word [QDESC+46], 0
  ret

build_chain_write:
  call build_chain_read
  mov word [QDESC+28], 1       ; data is device-readable
  ret

; wait until used.idx == ax
wait_used:
  mov ecx, 10000000
.w: cmp [QUSED+2], ax
  je .ok
  loop .w
  mov bl, 8
  jmp fail
.ok: ret

pci_read:
  mov dx, 0xcf8
  out dx, eax
  mov dx, 0xcfc
  in eax, dx
  ret

puts:
  mov dx, 0x3f8
.l: lodsb
  test al, al
  jz .e
  out dx, al
  jmp .l
.e: ret

fail:
  mov esi, failmsg
  call puts
  mov al, bl
  add al, '0'
  mov dx, 0x3f8
  out dx, al
  mov al, 10
  out dx, al
  mov dx, 0xf4
  mov al, bl
  out dx, al
  hlt

banner: db "virtio32: protected mode", 10, 0
done: db "virtio32: done", 10, 0
failmsg: db "virtio32: FAIL at step ", 0
wmsg: db "WRITTEN-BY-GUEST"
