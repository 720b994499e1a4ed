package imageio

import (
	"image"
	"image/color"
	"image/draw"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"
)

// Layout of the stage-3 side-by-side composition.
const (
	ComposeSide    = 800 // each image is resized to ComposeSide x ComposeSide
	ComposeGap     = 40  // horizontal gap between the two images
	ComposeDivider = 5   // black divider line centred in the gap
	ComposeLabel   = 60  // band above the images that holds the labels
	composeFontPx  = 36
)

// Labels written above the two halves.
const (
	ReferenceLabel = "Reference Image"
	CandidateLabel = "Candidate Image"
)

// SideBySide composes the stage-3 evaluator image: on a white canvas, the
// reference (or an all-black square when ref is nil) resized to 800x800 on
// the left and the candidate resized to 800x800 on the right, separated by
// a 40 px gap with a 5 px black divider in its middle, each with its label
// centred above it. The result is (800+40+800) x (60+800) pixels.
func SideBySide(ref, cand image.Image) image.Image {
	w := 2*ComposeSide + ComposeGap
	h := ComposeLabel + ComposeSide
	canvas := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(canvas, canvas.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)

	left := image.Rect(0, ComposeLabel, ComposeSide, h)
	right := image.Rect(ComposeSide+ComposeGap, ComposeLabel, w, h)
	if ref != nil {
		blitRGB(canvas, left.Min, ResizeBicubic(ref, ComposeSide, ComposeSide))
	} else {
		draw.Draw(canvas, left, image.NewUniform(color.Black), image.Point{}, draw.Src)
	}
	if cand != nil {
		blitRGB(canvas, right.Min, ResizeBicubic(cand, ComposeSide, ComposeSide))
	} else {
		draw.Draw(canvas, right, image.NewUniform(color.Black), image.Point{}, draw.Src)
	}
	dx := ComposeSide + (ComposeGap-ComposeDivider)/2
	draw.Draw(canvas, image.Rect(dx, 0, dx+ComposeDivider, h), image.NewUniform(color.Black), image.Point{}, draw.Src)

	if face := labelFace(); face != nil {
		drawCentred(canvas, face, ReferenceLabel, 0, ComposeSide)
		drawCentred(canvas, face, CandidateLabel, ComposeSide+ComposeGap, w)
	}
	return canvas
}

// labelFace parses the embedded Go Regular font (about a millisecond; the
// evaluator call it serves takes far longer).
func labelFace() font.Face {
	f, err := opentype.Parse(goregular.TTF)
	if err != nil {
		return nil
	}
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: composeFontPx, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		return nil
	}
	return face
}

// drawCentred writes text in black, centred horizontally between x0 and x1
// and vertically within the label band.
func drawCentred(dst draw.Image, face font.Face, text string, x0, x1 int) {
	d := &font.Drawer{Dst: dst, Src: image.NewUniform(color.Black), Face: face}
	width := d.MeasureString(text).Round()
	m := face.Metrics()
	textH := (m.Ascent + m.Descent).Round()
	x := x0 + (x1-x0-width)/2
	y := (ComposeLabel-textH)/2 + m.Ascent.Round()
	d.Dot = fixed.P(x, y)
	d.DrawString(text)
}

// blitRGB copies src into dst with its top-left corner at at (the generic
// draw path would go pixel by pixel through interfaces).
func blitRGB(dst *image.RGBA, at image.Point, src *RGB) {
	b := src.Bounds()
	for y := 0; y < b.Dy(); y++ {
		so := src.PixOffset(b.Min.X, b.Min.Y+y)
		do := dst.PixOffset(at.X, at.Y+y)
		for x := 0; x < b.Dx(); x++ {
			dst.Pix[do+4*x] = src.Pix[so+3*x]
			dst.Pix[do+4*x+1] = src.Pix[so+3*x+1]
			dst.Pix[do+4*x+2] = src.Pix[so+3*x+2]
			dst.Pix[do+4*x+3] = 255
		}
	}
}
