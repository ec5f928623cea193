int foo_discount(int cents);
const char *foo_label(int cents);
