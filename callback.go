package kcopyd

import "sync/atomic"

// CallbackHandle is a callback prepared with PrepareCallback, to be fired
// once with DoCallback.
type CallbackHandle struct {
	j     job
	c     *Client
	fired atomic.Bool
}

// PrepareCallback returns a handle that runs fn on the client's worker when
// DoCallback fires it, like the kernel's dm_kcopyd_prepare_callback: it
// lets code that did its own I/O report completion through the same serial
// callback path as copies. The handle counts as outstanding until fn has
// run, so Close waits for it: a handle that is never fired blocks Close.
// It fails only with ErrClosed.
func (c *Client) PrepareCallback(fn Callback) (*CallbackHandle, error) {
	if fn == nil {
		panic("kcopyd: PrepareCallback with a nil callback")
	}
	if err := c.accept(); err != nil {
		return nil, err
	}
	h := &CallbackHandle{c: c}
	h.j.kind, h.j.cb = kindCallback, fn
	return h, nil
}

// DoCallback fires a prepared handle: its callback runs on the worker with
// these results (err is a *JobError when readErr or writeErr is set). It
// never blocks and may be called from any goroutine. Firing a handle twice,
// or a handle of another client, panics.
func (c *Client) DoCallback(h *CallbackHandle, readErr bool, writeErr uint64) {
	if h.c != c {
		panic("kcopyd: DoCallback with another client's handle")
	}
	if h.fired.Swap(true) {
		panic("kcopyd: DoCallback fired the same handle twice")
	}
	h.j.cbRead, h.j.cbMask = readErr, writeErr
	c.push(&c.mu.callbacks, &h.j)
}

func callbackErr(readErr bool, mask uint64) error {
	if !readErr && mask == 0 {
		return nil
	}
	e := &JobError{writeMask: mask}
	if readErr {
		e.Read = ErrReported
	}
	return e
}
