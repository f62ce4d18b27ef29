/* A C program that uses a kernel emitted by softgen.emit_c (see Makefile):
 * softmax over the rows of a small matrix, one entry masked with -inf. */
#include <math.h>
#include <stdio.h>

#include "embed_softmax.h"

enum { ROWS = 4, N = 10 };

int main(void)
{
    static float x[ROWS][N], y[ROWS][N];
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < N; j++)
            x[r][j] = 3.0f * sinf(0.7f * (float)j + (float)r);
    x[1][3] = -INFINITY; /* masked: gets probability 0 */

    embed_softmax(ROWS, N, &x[0][0], N, &y[0][0], N);

    double worst = 0.0;
    for (int r = 0; r < ROWS; r++) {
        double sum = 0.0;
        for (int j = 0; j < N; j++) {
            printf("%.4f ", y[r][j]);
            sum += y[r][j];
        }
        printf("\n");
        worst = fmax(worst, fabs(sum - 1.0));
    }
    int ok = worst < 1e-6 && y[1][3] == 0.0f;
    printf("max |row sum - 1| = %.2e\n%s\n", worst, ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
