/* Host reference for the PCMPxSTRx tests (StringCompareHostTests.swift): random operands with
   edge bytes, explicit lengths from -20 to 20, every imm8; one line per case. */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <nmmintrin.h>

#define IMMS(X) X(0)X(1)X(2)X(3)X(4)X(5)X(6)X(7)X(8)X(9)X(10)X(11)X(12)X(13)X(14)X(15)X(16)X(17)X(18)X(19)X(20)X(21)X(22)X(23)X(24)X(25)X(26)X(27)X(28)X(29)X(30)X(31)X(32)X(33)X(34)X(35)X(36)X(37)X(38)X(39)X(40)X(41)X(42)X(43)X(44)X(45)X(46)X(47)X(48)X(49)X(50)X(51)X(52)X(53)X(54)X(55)X(56)X(57)X(58)X(59)X(60)X(61)X(62)X(63)
static unsigned char pick(void) { int r = rand() % 8; if (r == 0) return 0; if (r < 4) return "abcAZ09\x80\xff\x7f"[rand() % 10]; return rand(); }
int main(void) {
  srand(12345);
  for (int c = 0; c < 400; c++) {
    unsigned char a[16], b[16];
    for (int k = 0; k < 16; k++) { a[k] = pick(); b[k] = pick(); }
    if (c % 3 == 0) memcpy(b + (rand() % 12), a, 3);
    int la = (rand() % 41) - 20, lb = (rand() % 41) - 20;
    __m128i va = _mm_loadu_si128((void*)a), vb = _mm_loadu_si128((void*)b);
    for (int hi = 0; hi < 2; hi++) {
#define X(n) { int imm = n + 64*hi; unsigned ie, ii; __m128i me, mi; uint64_t q[4]; \
      if (hi) { ie = _mm_cmpestri(va, la, vb, lb, n + 64); ii = _mm_cmpistri(va, vb, n + 64); me = _mm_cmpestrm(va, la, vb, lb, n + 64); mi = _mm_cmpistrm(va, vb, n + 64); } \
      else { ie = _mm_cmpestri(va, la, vb, lb, n); ii = _mm_cmpistri(va, vb, n); me = _mm_cmpestrm(va, la, vb, lb, n); mi = _mm_cmpistrm(va, vb, n); } \
      int fe = _mm_cmpestrc(va, la, vb, lb, n) | _mm_cmpestrz(va, la, vb, lb, n) << 1 | _mm_cmpestrs(va, la, vb, lb, n) << 2 | _mm_cmpestro(va, la, vb, lb, n) << 3; \
      int fi = _mm_cmpistrc(va, vb, n) | _mm_cmpistrz(va, vb, n) << 1 | _mm_cmpistrs(va, vb, n) << 2 | _mm_cmpistro(va, vb, n) << 3; \
      memcpy(q, &me, 16); memcpy(q + 2, &mi, 16); \
      printf("%016llx %016llx %016llx %016llx %d %d %d %u %u %016llx %016llx %016llx %016llx %d %d\n", \
        *(unsigned long long*)a, *(unsigned long long*)(a+8), *(unsigned long long*)b, *(unsigned long long*)(b+8), la, lb, imm, ie, ii, \
        (unsigned long long)q[0], (unsigned long long)q[1], (unsigned long long)q[2], (unsigned long long)q[3], fe, fi); }
      IMMS(X)
    }
  }
}
