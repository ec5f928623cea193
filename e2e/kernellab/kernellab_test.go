package kernellab

import "testing"

func TestParseSteps(t *testing.T) {
	console := "SeaBIOS\n@@LS-BOOTED 6.1.0\n@@LS-BEGIN a\nhello\nworld\n@@LS-END a rc=0\n" +
		"@@LS-BEGIN b\n[   3.1] livepatch: noise\n@@LS-END b rc=3\n" +
		"@@LS-BEGIN c\npartial\n" // the VM died inside step c
	steps := ParseSteps(console)
	if s := steps["a"]; s.RC != 0 || s.Out != "hello\nworld\n" {
		t.Errorf("a = %+v", s)
	}
	if s := steps["b"]; s.RC != 3 || s.Out != "[   3.1] livepatch: noise\n" {
		t.Errorf("b = %+v", s)
	}
	if _, ok := steps["c"]; ok {
		t.Error("an unfinished step was reported")
	}
}
