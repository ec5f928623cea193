int aux(int x);
