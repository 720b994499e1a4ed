package linalg

// AttentionHead computes one attention head over one sequence of L tokens,
// reading queries, keys and values from the rows of a fused projection
// matrix and writing the head's output rows:
//
//	q_i = qkv[i*ld+qo : +dh], k_t = qkv[t*ld+ko : +dh], v_t = qkv[t*ld+vo : +dh]
//	out[i*ldo : +dh] = Σ_t softmax_t(scale · q_i·k_t) v_t
//
// With causal set, key t > query i is masked. Operands are packed straight
// from qkv into the micro-kernel layouts and both products run on padded
// tiles, so there are no edge cases and no intermediate copies. It runs on
// the calling goroutine.
func (s *Scratch) AttentionHead(out []float32, ldo int, qkv []float32, ld, qo, ko, vo, L, dh int, scale float32, causal bool) {
	if L <= 0 || dh <= 0 {
		return
	}
	sp := bestKernel
	mr, nr := sp.mr, sp.nr
	mp := (L + mr - 1) / mr
	Mp := mp * mr
	// Scores: S (Mp x Np) = (scale·Q) · Kᵀ, K depth dh.
	npS := (L + nr - 1) / nr
	Np := npS * nr
	ap := s.grow(&s.apack, max(mp*dh*mr, mp*L*mr))
	for i := 0; i < mp; i++ {
		panel := ap[i*dh*mr : (i+1)*dh*mr]
		for r := 0; r < mr; r++ {
			row := i*mr + r
			if row >= L {
				for d := 0; d < dh; d++ {
					panel[d*mr+r] = 0
				}
				continue
			}
			q := qkv[row*ld+qo : row*ld+qo+dh]
			for d, v := range q {
				panel[d*mr+r] = v * scale
			}
		}
	}
	bp := s.grow(&s.bpack, max(npS*dh*nr, ((dh+nr-1)/nr)*L*nr))
	for j := 0; j < npS; j++ {
		panel := bp[j*dh*nr : (j+1)*dh*nr]
		for c := 0; c < nr; c++ {
			t := j*nr + c
			if t >= L {
				for d := 0; d < dh; d++ {
					panel[d*nr+c] = 0
				}
				continue
			}
			k := qkv[t*ld+ko : t*ld+ko+dh]
			for d, v := range k {
				panel[d*nr+c] = v
			}
		}
	}
	S := s.grow(&s.sbuf, Mp*Np)
	clear(S)
	for i := 0; i < mp; i++ {
		for j := 0; j < npS; j++ {
			sp.fn(dh, ap[i*dh*mr:], bp[j*dh*nr:], S[i*mr*Np+j*nr:], Np)
		}
	}
	// Softmax over the visible keys; masked and padded keys become 0.
	for i := 0; i < L; i++ {
		n := L
		if causal {
			n = i + 1
		}
		row := S[i*Np : i*Np+L]
		SoftmaxRow(row[:n])
		clear(row[n:])
	}
	// Output: O (Mp x No) = P · V, depth L.
	npO := (dh + nr - 1) / nr
	No := npO * nr
	for i := 0; i < mp; i++ {
		panel := ap[i*L*mr : (i+1)*L*mr]
		for r := 0; r < mr; r++ {
			row := i*mr + r
			if row >= L {
				for t := 0; t < L; t++ {
					panel[t*mr+r] = 0
				}
				continue
			}
			for t, p := range S[row*Np : row*Np+L] {
				panel[t*mr+r] = p
			}
		}
	}
	for j := 0; j < npO; j++ {
		panel := bp[j*L*nr : (j+1)*L*nr]
		c0, c1 := j*nr, min(j*nr+nr, dh)
		for t := 0; t < L; t++ {
			dst := panel[t*nr : t*nr+nr]
			copy(dst, qkv[t*ld+vo+c0:t*ld+vo+c1])
			clear(dst[c1-c0:])
		}
	}
	O := s.grow(&s.obuf, Mp*No)
	clear(O)
	for i := 0; i < mp; i++ {
		for j := 0; j < npO; j++ {
			sp.fn(L, ap[i*L*mr:], bp[j*L*nr:], O[i*mr*No+j*nr:], No)
		}
	}
	for i := 0; i < L; i++ {
		copy(out[i*ldo:i*ldo+dh], O[i*No:i*No+dh])
	}
}
