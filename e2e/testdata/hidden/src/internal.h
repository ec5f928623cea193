/* Functions and data shared by the library's units, hidden from its users. */
extern int tax_limit;
int rate_base(int cents);
int rate_bonus(int cents);
