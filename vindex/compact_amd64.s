#include "textflag.h"

// func dotsVNNI(q *int8, codes *uint8, blocks, groups int, out *int32)
//
// For each block of 16 gallery rows (laid out as groups x 16 rows x 4
// bytes, unsigned, offset by 128) it writes the 16 sums over the dimensions
// of code[r][i] * q[i] (q signed, 4 bytes per group) with AVX-512 VNNI.
// groups must be a positive multiple of 4.
TEXT ·dotsVNNI(SB), NOSPLIT, $0-40
	MOVQ q+0(FP), AX
	MOVQ codes+8(FP), SI
	MOVQ blocks+16(FP), CX
	MOVQ groups+24(FP), DX
	MOVQ out+32(FP), DI
	TESTQ CX, CX
	JZ done
block:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	MOVQ AX, R8
	MOVQ DX, R9
group:
	VMOVDQU32 0(SI), Z4
	VMOVDQU32 64(SI), Z5
	VMOVDQU32 128(SI), Z6
	VMOVDQU32 192(SI), Z7
	VPDPBUSD.BCST 0(R8), Z4, Z0
	VPDPBUSD.BCST 4(R8), Z5, Z1
	VPDPBUSD.BCST 8(R8), Z6, Z2
	VPDPBUSD.BCST 12(R8), Z7, Z3
	ADDQ $256, SI
	ADDQ $16, R8
	SUBQ $4, R9
	JNZ group
	VPADDD Z1, Z0, Z0
	VPADDD Z3, Z2, Z2
	VPADDD Z2, Z0, Z0
	VMOVDQU32 Z0, 0(DI)
	ADDQ $64, DI
	DECQ CX
	JNZ block
done:
	VZEROUPPER
	RET
