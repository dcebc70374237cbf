package clone_test

// helperMain runs the crash-test child when the test binary is re-executed
// as one, and reports whether it did.
func helperMain() bool { return false }
