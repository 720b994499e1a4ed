package clip

import (
	"archive/zip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"strings"
)

// PyTorch checkpoints (pytorch_model.bin, open_clip_pytorch_model.bin) are
// zip archives written by torch.save: <archive>/data.pkl is a pickle of the
// state dict, and each tensor's storage is the stored (uncompressed) entry
// <archive>/data/<key>. A pickle can name any Python callable and have it
// run, so the reader here is a restricted unpickler: it interprets the
// opcodes itself, accepts only the globals a state dict of tensors needs
// (ordered dicts, tensor rebuilds, typed storages) and refuses anything else
// before anything is built. Nothing from the file is ever executed.

// ErrUnsafePickle is returned (wrapped) for a checkpoint whose pickle refers
// to anything but tensors, storages and (ordered) dicts.
var ErrUnsafePickle = errors.New("pickle refers to something other than tensors, storages and dicts")

// storageDTypes maps torch's typed storage classes to safetensors dtypes.
var storageDTypes = map[string]string{
	"FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16", "DoubleStorage": "F64",
	"LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
	"ByteStorage": "U8", "BoolStorage": "BOOL",
}

// pickle values beyond Go's plain ones.
type (
	pyGlobal struct{ module, name string }
	pyMark   struct{}
	pyTuple  []any
	pyDict   struct {
		keys []any
		vals []any
	}
	pyStorage struct {
		dtype string
		key   string
		numel int
	}
	pyTensor struct {
		storage pyStorage
		offset  int
		shape   []int
		stride  []int
	}
)

func (d *pyDict) set(k, v any) {
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
}

// allowedGlobal reports whether module.name may appear in a checkpoint.
func allowedGlobal(module, name string) bool {
	switch module + "." + name {
	case "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter":
		return true
	}
	if module == "torch" {
		_, ok := storageDTypes[name]
		return ok
	}
	return false
}

// unpickle interprets a protocol 2-5 pickle of a state dict. persistent
// resolves a persistent id (torch's storage references).
func unpickle(data []byte, persistent func(pyTuple) (any, error)) (any, error) {
	var (
		stack []any
		memo  = map[uint32]any{}
		pos   int
	)
	need := func(n int) ([]byte, error) {
		if pos+n > len(data) {
			return nil, fmt.Errorf("truncated pickle at byte %d", pos)
		}
		b := data[pos : pos+n]
		pos += n
		return b, nil
	}
	pop := func() (any, error) {
		if len(stack) == 0 {
			return nil, fmt.Errorf("pickle stack underflow at byte %d", pos)
		}
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		return v, nil
	}
	popMark := func() ([]any, error) {
		for i := len(stack) - 1; i >= 0; i-- {
			if _, ok := stack[i].(pyMark); ok {
				items := append([]any(nil), stack[i+1:]...)
				stack = stack[:i]
				return items, nil
			}
		}
		return nil, fmt.Errorf("pickle: no mark at byte %d", pos)
	}
	top := func() (any, error) {
		if len(stack) == 0 {
			return nil, fmt.Errorf("pickle stack underflow at byte %d", pos)
		}
		return stack[len(stack)-1], nil
	}
	for {
		op, err := need(1)
		if err != nil {
			return nil, err
		}
		switch op[0] {
		case 0x80: // PROTO
			if _, err := need(1); err != nil {
				return nil, err
			}
		case 0x95: // FRAME
			if _, err := need(8); err != nil {
				return nil, err
			}
		case '.': // STOP
			return pop()
		case '(':
			stack = append(stack, pyMark{})
		case '}':
			stack = append(stack, &pyDict{})
		case ']':
			stack = append(stack, &[]any{})
		case ')':
			stack = append(stack, pyTuple{})
		case 'N':
			stack = append(stack, nil)
		case 0x88:
			stack = append(stack, true)
		case 0x89:
			stack = append(stack, false)
		case 'K':
			b, err := need(1)
			if err != nil {
				return nil, err
			}
			stack = append(stack, int(b[0]))
		case 'M':
			b, err := need(2)
			if err != nil {
				return nil, err
			}
			stack = append(stack, int(binary.LittleEndian.Uint16(b)))
		case 'J':
			b, err := need(4)
			if err != nil {
				return nil, err
			}
			stack = append(stack, int(int32(binary.LittleEndian.Uint32(b))))
		case 0x8a: // LONG1
			b, err := need(1)
			if err != nil {
				return nil, err
			}
			n := int(b[0])
			if n > 8 {
				return nil, fmt.Errorf("pickle: integer of %d bytes", n)
			}
			raw, err := need(n)
			if err != nil {
				return nil, err
			}
			var v uint64
			for i := n - 1; i >= 0; i-- {
				v = v<<8 | uint64(raw[i])
			}
			if n > 0 && n < 8 && raw[n-1]&0x80 != 0 {
				v -= 1 << (8 * uint(n))
			}
			stack = append(stack, int(int64(v)))
		case 'G':
			b, err := need(8)
			if err != nil {
				return nil, err
			}
			stack = append(stack, math.Float64frombits(binary.BigEndian.Uint64(b)))
		case 'X', 0x8c, 0x8d, 'B', 'C', 'U', 'T': // strings and bytes
			var n int
			switch op[0] {
			case 'X', 'B', 'T':
				b, err := need(4)
				if err != nil {
					return nil, err
				}
				n = int(binary.LittleEndian.Uint32(b))
			case 0x8d:
				b, err := need(8)
				if err != nil {
					return nil, err
				}
				n = int(binary.LittleEndian.Uint64(b))
			default:
				b, err := need(1)
				if err != nil {
					return nil, err
				}
				n = int(b[0])
			}
			if n < 0 || n > len(data) {
				return nil, fmt.Errorf("pickle: string of %d bytes", n)
			}
			b, err := need(n)
			if err != nil {
				return nil, err
			}
			stack = append(stack, string(b))
		case 'c': // GLOBAL "module\nname\n"
			rest := data[pos:]
			i := strings.IndexByte(string(rest), '\n')
			j := -1
			if i >= 0 {
				j = strings.IndexByte(string(rest[i+1:]), '\n')
			}
			if i < 0 || j < 0 {
				return nil, fmt.Errorf("pickle: bad GLOBAL at byte %d", pos)
			}
			module, name := string(rest[:i]), string(rest[i+1:i+1+j])
			pos += i + j + 2
			if !allowedGlobal(module, name) {
				return nil, fmt.Errorf("global %s.%s: %w; refusing to load it (nothing was run)", module, name, ErrUnsafePickle)
			}
			stack = append(stack, pyGlobal{module, name})
		case 0x93: // STACK_GLOBAL
			n, err := pop()
			if err != nil {
				return nil, err
			}
			m, err := pop()
			if err != nil {
				return nil, err
			}
			module, _ := m.(string)
			name, _ := n.(string)
			if !allowedGlobal(module, name) {
				return nil, fmt.Errorf("global %s.%s: %w; refusing to load it (nothing was run)", module, name, ErrUnsafePickle)
			}
			stack = append(stack, pyGlobal{module, name})
		case 'q', 'r', 0x94: // BINPUT, LONG_BINPUT, MEMOIZE
			var k uint32
			switch op[0] {
			case 'q':
				b, err := need(1)
				if err != nil {
					return nil, err
				}
				k = uint32(b[0])
			case 'r':
				b, err := need(4)
				if err != nil {
					return nil, err
				}
				k = binary.LittleEndian.Uint32(b)
			default:
				k = uint32(len(memo))
			}
			v, err := top()
			if err != nil {
				return nil, err
			}
			memo[k] = v
		case 'h', 'j': // BINGET, LONG_BINGET
			var k uint32
			if op[0] == 'h' {
				b, err := need(1)
				if err != nil {
					return nil, err
				}
				k = uint32(b[0])
			} else {
				b, err := need(4)
				if err != nil {
					return nil, err
				}
				k = binary.LittleEndian.Uint32(b)
			}
			v, ok := memo[k]
			if !ok {
				return nil, fmt.Errorf("pickle: memo %d unset", k)
			}
			stack = append(stack, v)
		case 't':
			items, err := popMark()
			if err != nil {
				return nil, err
			}
			stack = append(stack, pyTuple(items))
		case 0x85, 0x86, 0x87: // TUPLE1..3
			n := int(op[0] - 0x84)
			if len(stack) < n {
				return nil, fmt.Errorf("pickle stack underflow at byte %d", pos)
			}
			t := append(pyTuple(nil), stack[len(stack)-n:]...)
			stack = append(stack[:len(stack)-n], t)
		case 'd':
			items, err := popMark()
			if err != nil {
				return nil, err
			}
			d := &pyDict{}
			for i := 0; i+1 < len(items); i += 2 {
				d.set(items[i], items[i+1])
			}
			stack = append(stack, d)
		case 'l':
			items, err := popMark()
			if err != nil {
				return nil, err
			}
			stack = append(stack, &items)
		case 's', 'u': // SETITEM, SETITEMS
			var items []any
			if op[0] == 's' {
				v, err := pop()
				if err != nil {
					return nil, err
				}
				k, err := pop()
				if err != nil {
					return nil, err
				}
				items = []any{k, v}
			} else if items, err = popMark(); err != nil {
				return nil, err
			}
			t, err := top()
			if err != nil {
				return nil, err
			}
			d, ok := t.(*pyDict)
			if !ok {
				return nil, fmt.Errorf("pickle: SETITEM on %T", t)
			}
			for i := 0; i+1 < len(items); i += 2 {
				d.set(items[i], items[i+1])
			}
		case 'a', 'e': // APPEND, APPENDS
			var items []any
			if op[0] == 'a' {
				v, err := pop()
				if err != nil {
					return nil, err
				}
				items = []any{v}
			} else if items, err = popMark(); err != nil {
				return nil, err
			}
			t, err := top()
			if err != nil {
				return nil, err
			}
			l, ok := t.(*[]any)
			if !ok {
				return nil, fmt.Errorf("pickle: APPEND on %T", t)
			}
			*l = append(*l, items...)
		case 'Q': // BINPERSID
			pid, err := pop()
			if err != nil {
				return nil, err
			}
			t, ok := pid.(pyTuple)
			if !ok {
				return nil, fmt.Errorf("pickle: persistent id %T", pid)
			}
			v, err := persistent(t)
			if err != nil {
				return nil, err
			}
			stack = append(stack, v)
		case 'R': // REDUCE
			a, err := pop()
			if err != nil {
				return nil, err
			}
			f, err := pop()
			if err != nil {
				return nil, err
			}
			args, ok := a.(pyTuple)
			g, gok := f.(pyGlobal)
			if !ok || !gok {
				return nil, fmt.Errorf("pickle: REDUCE of %T with %T", f, a)
			}
			v, err := reduce(g, args)
			if err != nil {
				return nil, err
			}
			stack = append(stack, v)
		case 'b': // BUILD: the state of an OrderedDict (torch's _metadata) is dropped
			if _, err := pop(); err != nil {
				return nil, err
			}
			if t, err := top(); err != nil {
				return nil, err
			} else if _, ok := t.(*pyDict); !ok {
				return nil, fmt.Errorf("pickle: BUILD on %T: %w", t, ErrUnsafePickle)
			}
		default:
			return nil, fmt.Errorf("pickle: opcode 0x%02x at byte %d is not supported in a checkpoint: %w", op[0], pos-1, ErrUnsafePickle)
		}
	}
}

// reduce applies one of the allowed callables.
func reduce(g pyGlobal, args pyTuple) (any, error) {
	switch g.module + "." + g.name {
	case "collections.OrderedDict":
		return &pyDict{}, nil
	case "torch._utils._rebuild_parameter":
		if len(args) < 1 {
			return nil, fmt.Errorf("_rebuild_parameter: %d arguments", len(args))
		}
		if _, ok := args[0].(pyTensor); !ok {
			return nil, fmt.Errorf("_rebuild_parameter of %T", args[0])
		}
		return args[0], nil
	case "torch._utils._rebuild_tensor_v2":
		if len(args) < 4 {
			return nil, fmt.Errorf("_rebuild_tensor_v2: %d arguments", len(args))
		}
		st, ok := args[0].(pyStorage)
		off, ok2 := args[1].(int)
		size, ok3 := args[2].(pyTuple)
		stride, ok4 := args[3].(pyTuple)
		if !ok || !ok2 || !ok3 || !ok4 {
			return nil, fmt.Errorf("_rebuild_tensor_v2: unexpected arguments %T %T %T %T", args[0], args[1], args[2], args[3])
		}
		t := pyTensor{storage: st, offset: off}
		for _, d := range size {
			n, ok := d.(int)
			if !ok || n < 0 {
				return nil, fmt.Errorf("_rebuild_tensor_v2: size %v", size)
			}
			t.shape = append(t.shape, n)
		}
		for _, d := range stride {
			n, ok := d.(int)
			if !ok {
				return nil, fmt.Errorf("_rebuild_tensor_v2: stride %v", stride)
			}
			t.stride = append(t.stride, n)
		}
		if len(t.shape) != len(t.stride) {
			return nil, fmt.Errorf("_rebuild_tensor_v2: size %v and stride %v differ in rank", size, stride)
		}
		return t, nil
	}
	return nil, fmt.Errorf("global %s.%s cannot be called: %w", g.module, g.name, ErrUnsafePickle)
}

// openPyTorch reads the index of a torch.save zip checkpoint. The tensors
// are read in place from the archive's stored entries, as for safetensors.
func openPyTorch(p string) (*safetensorsFile, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	st, err := parsePyTorch(f, p)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pytorch checkpoint %s: %w", p, err)
	}
	return st, nil
}

func parsePyTorch(f *os.File, p string) (*safetensorsFile, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	zr, err := zip.NewReader(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("not a zip archive (%v); only the zip format torch.save writes since PyTorch 1.6 is read", err)
	}
	var pkl *zip.File
	entries := map[string]*zip.File{}
	for _, e := range zr.File {
		entries[e.Name] = e
		if path.Base(e.Name) == "data.pkl" && (pkl == nil || len(e.Name) < len(pkl.Name)) {
			pkl = e
		}
	}
	if pkl == nil {
		return nil, errors.New("no data.pkl in the archive")
	}
	prefix := strings.TrimSuffix(pkl.Name, "data.pkl")
	if bo, ok := entries[prefix+"byteorder"]; ok {
		b, err := readEntry(bo, 16)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(string(b)) != "little" {
			return nil, fmt.Errorf("byte order %q is not supported", b)
		}
	}
	data, err := readEntry(pkl, 1<<30)
	if err != nil {
		return nil, err
	}
	storages := map[string]pyStorage{}
	root, err := unpickle(data, func(pid pyTuple) (any, error) {
		// ('storage', <storage class>, key, location, numel)
		if len(pid) < 5 || pid[0] != "storage" {
			return nil, fmt.Errorf("persistent id %v: %w", pid, ErrUnsafePickle)
		}
		g, ok := pid[1].(pyGlobal)
		key, ok2 := pid[2].(string)
		numel, ok3 := pid[4].(int)
		if !ok || !ok2 || !ok3 {
			return nil, fmt.Errorf("persistent id %v: %w", pid, ErrUnsafePickle)
		}
		dt, ok := storageDTypes[g.name]
		if !ok || g.module != "torch" {
			return nil, fmt.Errorf("storage class %s.%s: %w", g.module, g.name, ErrUnsafePickle)
		}
		s := pyStorage{dtype: dt, key: key, numel: numel}
		storages[key] = s
		return s, nil
	})
	if err != nil {
		return nil, err
	}
	dict, ok := root.(*pyDict)
	if !ok {
		return nil, fmt.Errorf("the pickle holds a %T, not a state dict", root)
	}
	// Training checkpoints wrap the weights: {"state_dict": {...}, ...}.
	for i, k := range dict.keys {
		if k == "state_dict" {
			if d, ok := dict.vals[i].(*pyDict); ok {
				dict = d
			}
		}
	}
	st := &safetensorsFile{path: p, f: f, tensors: map[string]*tensorInfo{}}
	for i, k := range dict.keys {
		name, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("state dict key %v is not a string", k)
		}
		t, ok := dict.vals[i].(pyTensor)
		if !ok {
			continue // non-tensor entries (epoch counters and the like)
		}
		info, err := tensorInZip(entries, prefix, name, t)
		if err != nil {
			return nil, err
		}
		st.tensors[name] = info
	}
	if len(st.tensors) == 0 {
		return nil, errors.New("no tensors in the state dict")
	}
	return st, nil
}

// tensorInZip locates the bytes of a contiguous tensor inside the stored
// storage entry.
func tensorInZip(entries map[string]*zip.File, prefix, name string, t pyTensor) (*tensorInfo, error) {
	e, ok := entries[prefix+"data/"+t.storage.key]
	if !ok {
		return nil, fmt.Errorf("tensor %q: storage %s missing from the archive", name, t.storage.key)
	}
	if e.Method != zip.Store {
		return nil, fmt.Errorf("tensor %q: storage %s is compressed; torch.save stores them uncompressed", name, t.storage.key)
	}
	elem := dtypeSize(t.storage.dtype)
	if elem == 0 {
		return nil, fmt.Errorf("tensor %q: dtype %s", name, t.storage.dtype)
	}
	n, want := 1, 1
	for i := len(t.shape) - 1; i >= 0; i-- {
		if t.shape[i] != 1 && t.stride[i] != want {
			return nil, fmt.Errorf("tensor %q is not contiguous (shape %v, stride %v); save it with .contiguous()", name, t.shape, t.stride)
		}
		want *= t.shape[i]
		n *= t.shape[i]
	}
	if t.offset < 0 || t.offset+n > t.storage.numel || uint64(t.storage.numel*elem) > e.UncompressedSize64 {
		return nil, fmt.Errorf("tensor %q: %d elements at offset %d do not fit its storage of %d", name, n, t.offset, t.storage.numel)
	}
	off, err := e.DataOffset()
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	begin := off + int64(t.offset*elem)
	return &tensorInfo{Name: name, DType: t.storage.dtype, Shape: append([]int{}, t.shape...),
		Begin: begin, End: begin + int64(n*elem), Elemsz: elem, NumElem: n}, nil
}

func readEntry(e *zip.File, limit int64) ([]byte, error) {
	if int64(e.UncompressedSize64) > limit {
		return nil, fmt.Errorf("%s: %d bytes is too large", e.Name, e.UncompressedSize64)
	}
	r, err := e.Open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, limit))
}
