module github.com/imagescope/imagescope

go 1.26
