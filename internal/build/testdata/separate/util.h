int add(int a, int b);
int scale(int x);
