package clone

// SetLockWaitHook sets the hook called when a request waits for a region
// lock; tests call it before opening clones and reset it with nil.
func SetLockWaitHook(f func(lo, hi int64)) { lockWaitHook = f }
