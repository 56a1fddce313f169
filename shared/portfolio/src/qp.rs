//! A primal active-set solver for small, strictly convex quadratic programs.
//!
//! Minimises `½ x' G x` (G positive definite) subject to linear equalities and inequalities,
//! starting from a feasible point (Nocedal & Wright, *Numerical Optimization*, algorithm 16.3).
//! Each iteration solves the equality-constrained subproblem on the working set exactly, so
//! once the right constraints are active the answer is exact up to rounding; there is no
//! iterative tolerance on the objective.

use crate::error::Error;
use crate::matrix::{Matrix, dot, solve_linear};

/// The name errors give this solver.
const SOLVER: &str = "active-set quadratic solver";
/// A step shorter than this (relative to the iterate) is rounding noise: the iterate is optimal
/// on the working set.
const STEP_TOLERANCE: f64 = 1e-14;
/// A constraint blocks a step only if the step points into it by more than this (relative):
/// smaller values are rounding in a direction parallel to the constraint.
const BLOCKING_TOLERANCE: f64 = 1e-12;
/// A multiplier counts as negative only below `-MULTIPLIER_TOLERANCE * |gradient|`.
const MULTIPLIER_TOLERANCE: f64 = 1e-11;

/// The left-hand side of a linear constraint.
#[derive(Debug, Clone, PartialEq)]
enum Row {
    /// `sign * x[index]`, with `sign` ±1: a bound, handled by fixing the variable.
    Unit { index: usize, sign: f64 },
    /// `a · x` with `a` of unit length.
    Dense(Vec<f64>),
}

/// One linear constraint `row · x (= or >=) rhs`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Constraint {
    row: Row,
    rhs: f64,
}

impl Constraint {
    /// `x[index] >= bound`.
    pub(crate) fn lower(index: usize, bound: f64) -> Self {
        Self {
            row: Row::Unit { index, sign: 1.0 },
            rhs: bound,
        }
    }

    /// `x[index] <= bound`.
    pub(crate) fn upper(index: usize, bound: f64) -> Self {
        Self {
            row: Row::Unit { index, sign: -1.0 },
            rhs: -bound,
        }
    }

    /// `a · x (= or >=) rhs`; `a` must not be zero. Scaled to a unit normal so that all
    /// multipliers are comparable.
    pub(crate) fn dense(a: Vec<f64>, rhs: f64) -> Self {
        let norm = dot(&a, &a).sqrt();
        Self {
            row: Row::Dense(a.iter().map(|v| v / norm).collect()),
            rhs: rhs / norm,
        }
    }

    fn dot(&self, x: &[f64]) -> f64 {
        match &self.row {
            Row::Unit { index, sign } => sign * x[*index],
            Row::Dense(a) => dot(a, x),
        }
    }
}

/// `min ½ x' G x` subject to `equalities` (`=`) and `inequalities` (`>=`).
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    /// The positive definite Hessian `G`.
    pub(crate) hessian: Matrix,
    /// Linearly independent equality constraints.
    pub(crate) equalities: Vec<Constraint>,
    /// Inequality constraints.
    pub(crate) inequalities: Vec<Constraint>,
}

impl Problem {
    /// Solves the problem from the feasible point `start`.
    pub(crate) fn minimize(&self, start: Vec<f64>) -> Result<Vec<f64>, Error> {
        let constraints: Vec<&Constraint> =
            self.equalities.iter().chain(&self.inequalities).collect();
        let first_inequality = self.equalities.len();
        let mut working: Vec<usize> = (0..first_inequality).collect();
        let mut in_working = vec![false; constraints.len()];
        in_working[..first_inequality].fill(true);
        let mut x = start;
        let max_iterations = 100 + 10 * (x.len() + constraints.len());

        for _ in 0..max_iterations {
            let gradient = self.hessian.mul_vec(&x);
            // A singular KKT system means the working set lost independence to rounding.
            let (step, multipliers) = self
                .equality_step(&gradient, &constraints, &working)
                .ok_or(Error::Numerical(
                    "singular kkt system in the active-set solver",
                ))?;
            let step_norm = inf_norm(&step);
            if step_norm > STEP_TOLERANCE * (1.0 + inf_norm(&x)) {
                let mut length = 1.0;
                let mut blocking = None;
                for (k, constraint) in constraints.iter().enumerate().skip(first_inequality) {
                    if in_working[k] {
                        continue;
                    }
                    let rate = constraint.dot(&step);
                    if rate < -BLOCKING_TOLERANCE * step_norm {
                        let slack = (constraint.dot(&x) - constraint.rhs).max(0.0);
                        let limit = slack / -rate;
                        if limit < length {
                            length = limit;
                            blocking = Some(k);
                        }
                    }
                }
                for (xi, si) in x.iter_mut().zip(&step) {
                    *xi += length * si;
                }
                if let Some(k) = blocking {
                    // Land exactly on a bound, so that bounds hold without rounding.
                    if let Row::Unit { index, sign } = constraints[k].row {
                        x[index] = sign * constraints[k].rhs;
                    }
                    working.push(k);
                    in_working[k] = true;
                    continue;
                }
            }

            // `x` now minimises the objective on the working set, and `multipliers` are its
            // Lagrange multipliers: optimal unless an inequality's multiplier is negative.
            let scale = inf_norm(&self.hessian.mul_vec(&x)).max(f64::MIN_POSITIVE);
            let most_negative = working
                .iter()
                .zip(&multipliers)
                .enumerate()
                .filter(|(_, (k, _))| **k >= first_inequality)
                .min_by(|a, b| a.1.1.total_cmp(b.1.1));
            match most_negative {
                Some((position, (&k, &lambda))) if lambda < -MULTIPLIER_TOLERANCE * scale => {
                    working.remove(position);
                    in_working[k] = false;
                }
                _ => return Ok(x),
            }
        }
        Err(Error::NotConverged {
            solver: SOLVER,
            iterations: max_iterations,
        })
    }

    /// The step `p` minimising the objective from `x` (whose gradient is given) with the
    /// working constraints kept tight, and the multipliers of those constraints at `x + p`.
    ///
    /// Bounds in the working set fix their variable, so only the free variables and the dense
    /// constraints enter the KKT system `[G_FF -A'; A 0] [p; λ] = [-g_F; 0]`.
    fn equality_step(
        &self,
        gradient: &[f64],
        constraints: &[&Constraint],
        working: &[usize],
    ) -> Option<(Vec<f64>, Vec<f64>)> {
        let n = gradient.len();
        let mut fixed = vec![false; n];
        let mut dense = Vec::new();
        for &k in working {
            match &constraints[k].row {
                Row::Unit { index, .. } => fixed[*index] = true,
                Row::Dense(a) => dense.push(a),
            }
        }
        let free: Vec<usize> = (0..n).filter(|&i| !fixed[i]).collect();
        let size = free.len() + dense.len();
        let mut kkt = vec![0.0; size * size];
        let mut rhs = vec![0.0; size];
        for (r, &i) in free.iter().enumerate() {
            for (c, &j) in free.iter().enumerate() {
                kkt[r * size + c] = self.hessian[(i, j)];
            }
            for (l, a) in dense.iter().enumerate() {
                let c = free.len() + l;
                kkt[r * size + c] = -a[i];
                kkt[c * size + r] = a[i];
            }
            rhs[r] = -gradient[i];
        }
        let solution = solve_linear(kkt, rhs)?;

        let mut step = vec![0.0; n];
        for (r, &i) in free.iter().enumerate() {
            step[i] = solution[r];
        }
        let dense_multipliers = &solution[free.len()..];
        // What the bounds must balance: G p + g minus the dense constraints' share.
        let mut residual = self.hessian.mul_vec(&step);
        for (ri, gi) in residual.iter_mut().zip(gradient) {
            *ri += gi;
        }
        for (a, lambda) in dense.iter().zip(dense_multipliers) {
            for (ri, ai) in residual.iter_mut().zip(a.iter()) {
                *ri -= lambda * ai;
            }
        }
        let mut next_dense = dense_multipliers.iter();
        let multipliers = working
            .iter()
            .map(|&k| match &constraints[k].row {
                Row::Unit { index, sign } => Some(sign * residual[*index]),
                Row::Dense(_) => next_dense.next().copied(),
            })
            .collect::<Option<Vec<f64>>>()?;
        Some((step, multipliers))
    }
}

fn inf_norm(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simplex(hessian: Matrix, lower: &[f64]) -> Problem {
        let n = hessian.dim();
        Problem {
            hessian,
            equalities: vec![Constraint::dense(vec![1.0; n], 1.0)],
            inequalities: lower
                .iter()
                .enumerate()
                .map(|(i, &l)| Constraint::lower(i, l))
                .collect(),
        }
    }

    #[test]
    fn an_interior_minimum_is_found_in_one_step() {
        // min x² + 2y² on x + y = 1: x = 2/3, y = 1/3.
        let hessian = Matrix::from_rows(&[vec![2.0, 0.0], vec![0.0, 4.0]]).unwrap();
        let x = simplex(hessian, &[0.0, 0.0])
            .minimize(vec![1.0, 0.0])
            .unwrap();
        assert!((x[0] - 2.0 / 3.0).abs() < 1e-15 && (x[1] - 1.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn a_binding_bound_is_kept_active() {
        // min (x² + y² + z²) with x >= 0.5: x = 0.5, y = z = 0.25.
        let hessian = Matrix::from_rows(&[
            vec![2.0, 0.0, 0.0],
            vec![0.0, 2.0, 0.0],
            vec![0.0, 0.0, 2.0],
        ])
        .unwrap();
        let x = simplex(hessian, &[0.5, 0.0, 0.0])
            .minimize(vec![0.5, 0.5, 0.0])
            .unwrap();
        assert!((x[0] - 0.5).abs() < 1e-15);
        assert!((x[1] - 0.25).abs() < 1e-15 && (x[2] - 0.25).abs() < 1e-15);
    }

    #[test]
    fn a_negative_weight_is_prevented_by_its_bound() {
        // Strong positive correlation with a much riskier asset makes the unconstrained minimum
        // short the risky one; long-only puts it at zero.
        let hessian = Matrix::from_rows(&[vec![1.0, 1.9], vec![1.9, 4.0]]).unwrap();
        let x = simplex(hessian, &[0.0, 0.0])
            .minimize(vec![0.0, 1.0])
            .unwrap();
        assert_eq!(x[1], 0.0);
        assert!((x[0] - 1.0).abs() < 1e-15);
    }
}
