int shape_area(int w, int h);
