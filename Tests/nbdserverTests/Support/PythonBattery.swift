// A python3-libnbd script that drives one server through targeted protocol cases and prints one
// line per case (results and errno names, data as hashes). The same script runs against
// nbdserver and qemu-nbd serving copies of the same image; the tests compare the transcripts.
//
// Usage: python3 - URI MODE [WRITABLE]   (MODE: structured | simple)

let pythonBattery = #"""
import nbd, sys, hashlib, errno

uri, mode = sys.argv[1], sys.argv[2]
writable = len(sys.argv) > 3 and sys.argv[3] == "rw"
h = nbd.NBD()
h.set_strict_mode(0)          # let invalid requests reach the server
h.set_request_structured_replies(mode == "structured")
h.add_meta_context("base:allocation")
h.add_meta_context("qemu:allocation-depth")
h.connect_uri(uri)
size = h.get_size()

def show(name, f):
    try:
        r = f()
        print(name, "ok", "" if r is None else r)
    except nbd.Error as e:
        print(name, "err", errno.errorcode.get(e.errnum, e.errnum))

def digest(b):
    return hashlib.sha1(b).hexdigest()[:16]

print("size", size, "structured", h.get_structured_replies_negotiated())
for flag in ["can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_df",
             "can_multi_conn", "can_cache", "is_read_only", "is_rotational"]:
    print(flag, getattr(h, flag)())
print("contexts", h.can_meta_context("base:allocation"), h.can_meta_context("qemu:allocation-depth"))

def reads(tag):
    for off, ln in [(0, 4096), (1, 3), (4095, 2), (1048000, 8192), (size - 512, 512), (size - 1, 1),
                    (0, 1 << 20), (size, 0), (3 << 20, 5 << 20)]:
        show("%s pread %d %d" % (tag, off, ln), lambda: digest(h.pread(ln, off)))

def structured_read(off, ln):
    buf = bytearray(ln)
    seen = []
    def chunk(sub, o, status, err):
        assert off <= o and o + len(sub) <= off + ln, "chunk outside request"
        buf[o - off:o - off + len(sub)] = sub
        seen.append((o, len(sub)))
        return 0
    h.pread_structured(ln, off, chunk)
    seen.sort()
    pos = off
    for o, l in seen:
        assert o == pos, "gap or overlap in chunks"
        pos += l
    assert pos == off + ln, "chunks do not cover the request"
    return digest(bytes(buf))

def block_status(off, ln, flags=0):
    res = []
    def cb(meta, o, entries, err):
        res.append("%s@%d:%s" % (meta, o, ",".join(str(e) for e in entries)))
        return 0
    h.block_status(ln, off, cb, flags)
    return " ".join(sorted(res))

reads("before")
show("pread past end", lambda: h.pread(512, size))
show("pread straddle", lambda: h.pread(1024, size - 512))
show("pread too big", lambda: h.pread(33554432 + 512, 0))
show("pread max", lambda: digest(h.pread(33554432, 0)))
show("pread fua", lambda: digest(h.pread(512, 0, flags=nbd.CMD_FLAG_FUA)))
show("pread bad flag", lambda: digest(h.pread(512, 0, flags=nbd.CMD_FLAG_NO_HOLE)))
if mode == "structured":
    show("pread df", lambda: digest(h.pread(8192, 1048576 - 4096, flags=nbd.CMD_FLAG_DF)))
    show("structured read sparse", lambda: structured_read(0, 4 << 20))
    show("structured read mixed", lambda: structured_read(1048576 - 100, 8192))
    show("bs all", lambda: block_status(0, size))
    show("bs reqone", lambda: block_status(0, size, nbd.CMD_FLAG_REQ_ONE))
    show("bs unaligned", lambda: block_status(1000, 5000))
    show("bs zero length", lambda: block_status(0, 0))
    show("bs past end", lambda: block_status(size, 512))
    show("bs bad flag", lambda: block_status(0, 4096, nbd.CMD_FLAG_FUA | nbd.CMD_FLAG_NO_HOLE))
show("flush", lambda: h.flush())
show("flush bad flag", lambda: h.flush(flags=nbd.CMD_FLAG_REQ_ONE))
show("cache", lambda: h.cache(4096, 0))
show("cache past end", lambda: h.cache(4096, size))
show("cache too big", lambda: h.cache(33554432 + 4096, 0))

pattern = bytes((i * 7 + 3) & 255 for i in range(65536))
show("pwrite", lambda: h.pwrite(pattern[:4096], 8192))
show("pwrite unaligned fua", lambda: h.pwrite(pattern[:1000], 12345, flags=nbd.CMD_FLAG_FUA))
show("pwrite past end", lambda: h.pwrite(pattern[:512], size))
show("pwrite straddle", lambda: h.pwrite(pattern[:1024], size - 512))
show("pwrite bad flag", lambda: h.pwrite(pattern[:512], 0, flags=nbd.CMD_FLAG_REQ_ONE))
show("zero", lambda: h.zero(65536, 2 << 20))
show("zero no hole", lambda: h.zero(4096, 1048576, flags=nbd.CMD_FLAG_NO_HOLE))
show("zero fast", lambda: h.zero(4096, 3 << 20, flags=nbd.CMD_FLAG_FAST_ZERO))
show("zero fua", lambda: h.zero(512, 1536, flags=nbd.CMD_FLAG_FUA))
show("zero past end", lambda: h.zero(512, size))
show("zero bad flag", lambda: h.zero(512, 0, flags=nbd.CMD_FLAG_DF))
show("trim", lambda: h.trim(65536, 4 << 20))
show("trim fua", lambda: h.trim(4096, 5 << 20, flags=nbd.CMD_FLAG_FUA))
show("trim past end", lambda: h.trim(4096, size))
show("flush after", lambda: h.flush())
reads("after")
if mode == "structured":
    show("bs after", lambda: block_status(0, 8 << 20))
h.shutdown()
print("done")
"""#
