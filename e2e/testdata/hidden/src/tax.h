/* The library's interface: the only exported functions. */
#define TAX_API __attribute__((visibility("default")))
TAX_API int tax_of(int cents);
TAX_API int tax_extra(int cents);
