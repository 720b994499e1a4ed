package linalg

import (
	"math"

	"github.com/viterin/vek/vek32"
)

// LayerNorm normalises each of the rows of x (dim values each) to zero mean
// and unit variance, then scales by gamma and shifts by beta, writing to dst
// (which may be x). Statistics are accumulated in float64.
func LayerNorm(dst, x []float32, rows, dim int, gamma, beta []float32, eps float32) {
	_ = gamma[dim-1]
	_ = beta[dim-1]
	for i := 0; i < rows; i++ {
		src := x[i*dim : (i+1)*dim]
		out := dst[i*dim : (i+1)*dim]
		var s float64
		for _, v := range src {
			s += float64(v)
		}
		mean := s / float64(dim)
		var ss float64
		for _, v := range src {
			d := float64(v) - mean
			ss += d * d
		}
		inv := float32(1 / math.Sqrt(ss/float64(dim)+float64(eps)))
		m := float32(mean)
		for j, v := range src {
			out[j] = (v-m)*inv*gamma[j] + beta[j]
		}
	}
}

// SoftmaxRow replaces row with its softmax, computed stably.
func SoftmaxRow(row []float32) {
	if len(row) == 0 {
		return
	}
	mx := vek32.Max(row)
	if math.IsInf(float64(mx), 0) || mx != mx {
		softmaxScalar(row, mx)
		return
	}
	vek32.SubNumber_Inplace(row, mx)
	vek32.MaximumNumber_Inplace(row, -87) // exp underflows to ~0 there anyway
	vek32.Exp_Inplace(row)
	vek32.MulNumber_Inplace(row, 1/vek32.Sum(row))
}

// softmaxScalar handles rows with infinities or NaN exactly.
func softmaxScalar(row []float32, mx float32) {
	var sum float32
	for i, v := range row {
		e := Exp(v - mx)
		row[i] = e
		sum += e
	}
	for i := range row {
		row[i] /= sum
	}
}

// Exp is a float32 exponential accurate to about 2 ulp over the whole range
// (0 below -87.3, +Inf above 88.7).
func Exp(x float32) float32 {
	const (
		ln2hi = 0.693359375
		ln2lo = -2.12194440e-4
		log2e = 1.44269504088896341
	)
	if x > 88.72283 {
		return float32(math.Inf(1))
	}
	if x < -87.33654 {
		return 0
	}
	if x != x {
		return x
	}
	// x = n*ln2 + r, |r| <= ln2/2
	fn := float32(math.Floor(float64(x*log2e + 0.5)))
	r := x - fn*ln2hi
	r -= fn * ln2lo
	// Cephes expf polynomial.
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	y := p*r*r + r + 1
	n := int32(fn)
	if n < -126 {
		// Subnormal result: scale in two steps.
		return y * math.Float32frombits(uint32(n+126+127)<<23) * math.Float32frombits(1<<23)
	}
	return y * math.Float32frombits(uint32(n+127)<<23)
}

// actChunk is the block size of the vectorised activation passes.
const actChunk = 256

// QuickGELU applies x·sigmoid(1.702x) in place (OpenAI CLIP's activation).
// The exponentials run through vek's AVX2 kernel.
func QuickGELU(x []float32) {
	var buf [actChunk]float32
	for len(x) > 0 {
		n := min(len(x), actChunk)
		c, t := x[:n], buf[:n]
		// t = exp(clamp(-1.702x)); clamped so vek's exp stays in range
		// (sigmoid is 0 or 1 to float32 precision well before).
		vek32.MulNumber_Into(t, c, -1.702)
		vek32.MinimumNumber_Inplace(t, 88)
		vek32.MaximumNumber_Inplace(t, -87)
		vek32.Exp_Inplace(t)
		vek32.AddNumber_Inplace(t, 1)
		vek32.Div_Inplace(c, t)
		x = x[n:]
	}
}

// GELU applies the exact (erf) GELU x·(1+erf(x/√2))/2 in place, with
// erfc from Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7) and the
// exponential through vek's AVX2 kernel.
func GELU(x []float32) {
	const (
		p  = 0.3275911
		a1 = 0.254829592
		a2 = -0.284496736
		a3 = 1.421413741
		a4 = -1.453152027
		a5 = 1.061405429
	)
	var buf [actChunk]float32
	for len(x) > 0 {
		n := min(len(x), actChunk)
		c, e := x[:n], buf[:n]
		for i, v := range c {
			z := v * 0.70710678118654752
			e[i] = max(-z*z, -87)
		}
		vek32.Exp_Inplace(e)
		for i, v := range c {
			z := v * 0.70710678118654752
			if z < 0 {
				z = -z
			}
			t := 1 / (1 + p*z)
			y := ((((a5*t+a4)*t+a3)*t+a2)*t + a1) * t * e[i] // erfc(|z|)
			if v >= 0 {
				c[i] = v - 0.5*v*y
			} else {
				c[i] = 0.5 * v * y
			}
		}
		x = x[n:]
	}
}

// Erf is the error function evaluated in float64 and rounded to float32.
func Erf(x float32) float32 { return float32(math.Erf(float64(x))) }
