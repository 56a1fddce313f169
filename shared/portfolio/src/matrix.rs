//! A small dense square matrix, just enough for covariances and the solvers.

use std::ops::{Index, IndexMut};

/// A dense `n × n` matrix of `f64`, stored row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    n: usize,
    data: Vec<f64>,
}

impl Matrix {
    /// An `n × n` matrix of zeros.
    pub fn zeros(n: usize) -> Self {
        Self {
            n,
            data: vec![0.0; n * n],
        }
    }

    /// Builds a matrix from `n` rows of length `n`; `None` if the rows are not square.
    pub fn from_rows(rows: &[Vec<f64>]) -> Option<Self> {
        let n = rows.len();
        if rows.iter().any(|row| row.len() != n) {
            return None;
        }
        Some(Self {
            n,
            data: rows.iter().flatten().copied().collect(),
        })
    }

    /// The number of rows (and of columns).
    pub fn dim(&self) -> usize {
        self.n
    }

    /// Row `i` as a slice; panics if `i >= dim()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.n..(i + 1) * self.n]
    }

    /// All entries, row-major.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// The diagonal.
    pub fn diagonal(&self) -> Vec<f64> {
        (0..self.n).map(|i| self[(i, i)]).collect()
    }

    /// The product `M x`; `x` must have `dim()` entries.
    pub fn mul_vec(&self, x: &[f64]) -> Vec<f64> {
        debug_assert_eq!(x.len(), self.n);
        (0..self.n).map(|i| dot(self.row(i), x)).collect()
    }

    /// The quadratic form `x' M x`; `x` must have `dim()` entries.
    pub fn quadratic_form(&self, x: &[f64]) -> f64 {
        dot(x, &self.mul_vec(x))
    }

    /// The matrix times a scalar.
    pub fn scaled(&self, factor: f64) -> Self {
        Self {
            n: self.n,
            data: self.data.iter().map(|v| v * factor).collect(),
        }
    }

    /// The first pivot of an attempted Cholesky factorisation that is `<= tolerance`, if any.
    ///
    /// Meant for a matrix with a unit diagonal (a correlation matrix), where the pivots are the
    /// fractions of each variable's variance not explained by the earlier ones.
    pub(crate) fn first_small_cholesky_pivot(&self, tolerance: f64) -> Option<usize> {
        let n = self.n;
        let mut lower = vec![0.0; n * n];
        for j in 0..n {
            let pivot = self[(j, j)] - dot(&lower[j * n..j * n + j], &lower[j * n..j * n + j]);
            if pivot.is_nan() || pivot <= tolerance {
                return Some(j);
            }
            let root = pivot.sqrt();
            lower[j * n + j] = root;
            for i in j + 1..n {
                let s = self[(i, j)] - dot(&lower[i * n..i * n + j], &lower[j * n..j * n + j]);
                lower[i * n + j] = s / root;
            }
        }
        None
    }
}

impl Index<(usize, usize)> for Matrix {
    type Output = f64;

    fn index(&self, (i, j): (usize, usize)) -> &f64 {
        assert!(i < self.n && j < self.n, "matrix index out of bounds");
        &self.data[i * self.n + j]
    }
}

impl IndexMut<(usize, usize)> for Matrix {
    fn index_mut(&mut self, (i, j): (usize, usize)) -> &mut f64 {
        assert!(i < self.n && j < self.n, "matrix index out of bounds");
        &mut self.data[i * self.n + j]
    }
}

/// The dot product of two slices of equal length.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves the square system `a x = b` (`a` row-major, `n × n`) by Gaussian elimination with
/// partial pivoting; `None` if `a` is singular.
pub(crate) fn solve_linear(mut a: Vec<f64>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    debug_assert_eq!(a.len(), n * n);
    for col in 0..n {
        let (pivot_row, pivot_abs) =
            (col..n)
                .map(|r| (r, a[r * n + col].abs()))
                .fold(
                    (col, -1.0),
                    |best, cur| if cur.1 > best.1 { cur } else { best },
                );
        if !pivot_abs.is_finite() || pivot_abs <= 0.0 {
            return None;
        }
        if pivot_row != col {
            for k in 0..n {
                a.swap(col * n + k, pivot_row * n + k);
            }
            b.swap(col, pivot_row);
        }
        let pivot = a[col * n + col];
        for r in col + 1..n {
            let factor = a[r * n + col] / pivot;
            if factor == 0.0 {
                continue;
            }
            for k in col..n {
                a[r * n + k] -= factor * a[col * n + k];
            }
            b[r] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row * n + k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row * n + row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_system_is_solved_exactly() {
        // 2x + y = 5, x + 3y = 10  =>  x = 1, y = 3
        let x = solve_linear(vec![2.0, 1.0, 1.0, 3.0], vec![5.0, 10.0]).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-15 && (x[1] - 3.0).abs() < 1e-15);
    }

    #[test]
    fn a_singular_system_is_reported() {
        assert!(solve_linear(vec![1.0, 2.0, 2.0, 4.0], vec![1.0, 2.0]).is_none());
    }

    #[test]
    fn cholesky_finds_the_dependent_column() {
        let m = Matrix::from_rows(&[
            vec![1.0, 0.5, 1.0],
            vec![0.5, 1.0, 0.5],
            vec![1.0, 0.5, 1.0],
        ])
        .unwrap();
        assert_eq!(m.first_small_cholesky_pivot(1e-10), Some(2));
        assert_eq!(Matrix::zeros(0).first_small_cholesky_pivot(1e-10), None);
    }

    #[test]
    fn quadratic_form_matches_the_definition() {
        let m = Matrix::from_rows(&[vec![2.0, 1.0], vec![1.0, 3.0]]).unwrap();
        assert_eq!(m.quadratic_form(&[1.0, 2.0]), 2.0 + 2.0 * 2.0 + 3.0 * 4.0);
        assert!(Matrix::from_rows(&[vec![1.0, 2.0]]).is_none());
    }
}
