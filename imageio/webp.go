package imageio

import "image"

// Lossy WebP stores limited-range BT.601 YUV 4:2:0. golang.org/x/image/webp
// returns it as an image.YCbCr, whose Go colour model assumes full-range
// JPEG YCbCr, so converting it with the standard library shifts contrast.
// PIL decodes through libwebp, which upsamples chroma with its "fancy"
// filter and converts with its own 14-bit fixed-point formulas; the
// functions here follow libwebp (src/dsp/upsampling.c, src/dsp/yuv.h).

// webpToImage converts a lossy WebP frame: *RGB without alpha, or
// *image.NRGBA carrying the alpha plane.
func webpToImage(img image.Image) image.Image {
	switch m := img.(type) {
	case *image.YCbCr:
		if m.SubsampleRatio != image.YCbCrSubsampleRatio420 {
			return img
		}
		out := NewRGB(image.Rect(0, 0, m.Rect.Dx(), m.Rect.Dy()))
		webpUpsample(m, out.Pix, out.Stride, 3)
		return out
	case *image.NYCbCrA:
		if m.SubsampleRatio != image.YCbCrSubsampleRatio420 {
			return img
		}
		w, h := m.Rect.Dx(), m.Rect.Dy()
		out := image.NewNRGBA(image.Rect(0, 0, w, h))
		webpUpsample(&m.YCbCr, out.Pix, out.Stride, 4)
		for y := 0; y < h; y++ {
			a := m.A[m.AOffset(m.Rect.Min.X, m.Rect.Min.Y+y):]
			row := out.Pix[y*out.Stride:]
			for x := 0; x < w; x++ {
				row[4*x+3] = a[x]
			}
		}
		return out
	}
	return img
}

func webpMultHi(v, c int) int { return (v * c) >> 8 }

func webpClip8(v int) uint8 {
	const mask = (256 << 6) - 1
	if v&^mask == 0 {
		return uint8(v >> 6)
	}
	if v < 0 {
		return 0
	}
	return 255
}

func webpYUVToRGB(y, u, v int, dst []uint8) {
	dst[0] = webpClip8(webpMultHi(y, 19077) + webpMultHi(v, 26149) - 14234)
	dst[1] = webpClip8(webpMultHi(y, 19077) - webpMultHi(u, 6419) - webpMultHi(v, 13320) + 8708)
	dst[2] = webpClip8(webpMultHi(y, 19077) + webpMultHi(u, 33050) - 17685)
}

// webpUpsample writes RGB into pix (bpp bytes per pixel) following
// libwebp's EmitFancyRGB: the first row (and the last row of an
// even-height image) uses its own chroma row twice; other rows are
// produced in pairs (2k-1, 2k) between chroma rows k-1 and k.
func webpUpsample(m *image.YCbCr, pix []uint8, stride, bpp int) {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	if w <= 0 || h <= 0 {
		return
	}
	cw := (w + 1) / 2
	yRow := func(y int) []uint8 { return m.Y[m.YOffset(m.Rect.Min.X, m.Rect.Min.Y+y):][:w] }
	cRow := func(p []uint8, cy int) []uint8 {
		return p[m.COffset(m.Rect.Min.X, m.Rect.Min.Y+2*cy):][:cw]
	}
	out := func(y int) []uint8 { return pix[y*stride:] }
	pair := func(topY, botY []uint8, topU, topV, curU, curV []uint8, topDst, botDst []uint8) {
		webpUpsampleLinePair(topY, botY, topU, topV, curU, curV, topDst, botDst, w, bpp)
	}
	pair(yRow(0), nil, cRow(m.Cb, 0), cRow(m.Cr, 0), cRow(m.Cb, 0), cRow(m.Cr, 0), out(0), nil)
	k := 1
	for ; 2*k < h; k++ {
		pair(yRow(2*k-1), yRow(2*k), cRow(m.Cb, k-1), cRow(m.Cr, k-1), cRow(m.Cb, k), cRow(m.Cr, k), out(2*k-1), out(2*k))
	}
	if h%2 == 0 {
		last := h/2 - 1
		pair(yRow(h-1), nil, cRow(m.Cb, last), cRow(m.Cr, last), cRow(m.Cb, last), cRow(m.Cr, last), out(h-1), nil)
	}
}

// webpUpsampleLinePair is libwebp's UpsampleRgbLinePair: each output
// sample is about (9a + 3b + 3c + d) / 16 of the four nearest chroma
// samples, computed through libwebp's two diagonal averages.
func webpUpsampleLinePair(topY, botY, topU, topV, curU, curV, topDst, botDst []uint8, n, bpp int) {
	lastPair := (n - 1) >> 1
	tlU, tlV := int(topU[0]), int(topV[0])
	lU, lV := int(curU[0]), int(curV[0])
	webpYUVToRGB(int(topY[0]), (3*tlU+lU+2)>>2, (3*tlV+lV+2)>>2, topDst)
	if botY != nil {
		webpYUVToRGB(int(botY[0]), (3*lU+tlU+2)>>2, (3*lV+tlV+2)>>2, botDst)
	}
	for x := 1; x <= lastPair; x++ {
		tU, tV := int(topU[x]), int(topV[x])
		u, v := int(curU[x]), int(curV[x])
		avgU, avgV := tlU+tU+lU+u+8, tlV+tV+lV+v+8
		d12U, d12V := (avgU+2*(tU+lU))>>3, (avgV+2*(tV+lV))>>3
		d03U, d03V := (avgU+2*(tlU+u))>>3, (avgV+2*(tlV+v))>>3
		webpYUVToRGB(int(topY[2*x-1]), (d12U+tlU)>>1, (d12V+tlV)>>1, topDst[(2*x-1)*bpp:])
		webpYUVToRGB(int(topY[2*x]), (d03U+tU)>>1, (d03V+tV)>>1, topDst[2*x*bpp:])
		if botY != nil {
			webpYUVToRGB(int(botY[2*x-1]), (d03U+lU)>>1, (d03V+lV)>>1, botDst[(2*x-1)*bpp:])
			webpYUVToRGB(int(botY[2*x]), (d12U+u)>>1, (d12V+v)>>1, botDst[2*x*bpp:])
		}
		tlU, tlV, lU, lV = tU, tV, u, v
	}
	if n&1 == 0 {
		webpYUVToRGB(int(topY[n-1]), (3*tlU+lU+2)>>2, (3*tlV+lV+2)>>2, topDst[(n-1)*bpp:])
		if botY != nil {
			webpYUVToRGB(int(botY[n-1]), (3*lU+tlU+2)>>2, (3*lV+tlV+2)>>2, botDst[(n-1)*bpp:])
		}
	}
}
