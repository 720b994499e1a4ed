package clip

import "math"

func expf64(x float64) float64 { return math.Exp(x) }
