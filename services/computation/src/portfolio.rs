//! `OptimizePortfolio`: aligned closes of each symbol from the store, then the optimiser of
//! `tickmesh-portfolio` on the compute pool.

use std::collections::{BTreeSet, HashMap};

use tickmesh_portfolio::{Error, Objective, Problem, optimize as solve};
use tickmesh_proto::v1::{
    AssetWeight, OptimizePortfolioRequest, OptimizePortfolioResponse, PortfolioObjective,
};
use tonic::Status;

use crate::{ComputationApi, MAX_SYMBOLS, convert, history};

/// Most bars of lookback.
pub const MAX_LOOKBACK: u32 = 100_000;

fn objective(value: i32) -> Result<Objective, Status> {
    match PortfolioObjective::try_from(value) {
        Ok(PortfolioObjective::MinVariance) => Ok(Objective::MinVariance),
        Ok(PortfolioObjective::MaxSharpe) => Ok(Objective::MaxSharpe),
        Ok(PortfolioObjective::RiskParity) => Ok(Objective::RiskParity),
        _ => Err(convert::bad_field(
            "objective",
            format!("{value} is not an objective (MIN_VARIANCE, MAX_SHARPE, RISK_PARITY)"),
        )),
    }
}

fn status(error: Error) -> Status {
    match error {
        Error::SingularCovariance { .. }
        | Error::NoExcessReturn { .. }
        | Error::TooFewObservations { .. } => Status::failed_precondition(error.to_string()),
        Error::NotConverged { .. } | Error::Numerical(_) => Status::internal(error.to_string()),
        _ => Status::invalid_argument(error.to_string()),
    }
}

/// Weights for the request's symbols over their last `lookback_bars` common bars.
pub async fn optimize(
    api: &ComputationApi,
    request: OptimizePortfolioRequest,
) -> Result<OptimizePortfolioResponse, Status> {
    convert::symbols(&request.symbols, MAX_SYMBOLS)?;
    let unique: BTreeSet<&String> = request.symbols.iter().collect();
    if unique.len() != request.symbols.len() {
        return Err(convert::bad_field("symbols", "each symbol at most once"));
    }
    let interval = convert::interval(request.interval, "interval")?;
    let objective = objective(request.objective)?;
    if request.lookback_bars < 3 || request.lookback_bars > MAX_LOOKBACK {
        return Err(convert::bad_field(
            "lookback_bars",
            format!("3 to {MAX_LOOKBACK} bars"),
        ));
    }
    if !request.risk_free_rate.is_finite() {
        return Err(convert::bad_field(
            "risk_free_rate",
            "must be a finite number",
        ));
    }
    let mut bounds = vec![(0.0, 1.0); request.symbols.len()];
    let position: HashMap<&str, usize> = request
        .symbols
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    for (i, bound) in request.bounds.iter().enumerate() {
        let Some(&at) = position.get(bound.symbol.as_str()) else {
            return Err(convert::bad_field(
                format!("bounds[{i}].symbol"),
                format!("{} is not one of the symbols", bound.symbol),
            ));
        };
        let max = if bound.max_weight == 0.0 && bound.min_weight == 0.0 {
            1.0
        } else {
            bound.max_weight
        };
        bounds[at] = (bound.min_weight, max);
    }

    // The last lookback+1 bars (lookback returns) on the open times every symbol has.
    let mut histories = Vec::with_capacity(request.symbols.len());
    for symbol in &request.symbols {
        let history = history::load(&api.store, symbol, interval as i32, 0, 0, 0).await?;
        if history.is_empty() {
            return Err(Status::failed_precondition(format!(
                "no {interval:?} candles stored for {symbol}"
            )));
        }
        histories.push(history);
    }
    let mut common: BTreeSet<i64> = histories[0].time_us.iter().copied().collect();
    for history in &histories[1..] {
        let times: BTreeSet<i64> = history.time_us.iter().copied().collect();
        common = common.intersection(&times).copied().collect();
    }
    let need = request.lookback_bars as usize + 1;
    if common.len() < need {
        return Err(Status::failed_precondition(format!(
            "lookback of {} bars needs {need} bars common to every symbol, there are {}",
            request.lookback_bars,
            common.len()
        )));
    }
    let times: BTreeSet<i64> = common.into_iter().rev().take(need).collect();
    let closes: Vec<Vec<f64>> = histories
        .iter()
        .map(|h| {
            h.time_us
                .iter()
                .zip(&h.close)
                .filter(|(t, _)| times.contains(t))
                .map(|(_, c)| *c)
                .collect()
        })
        .collect();
    let problem = Problem {
        closes,
        objective,
        bounds,
        risk_free_rate: request.risk_free_rate,
    };
    let solution = api
        .pool
        .run(move |_| solve(&problem))
        .await?
        .map_err(status)?;
    Ok(OptimizePortfolioResponse {
        weights: request
            .symbols
            .iter()
            .zip(solution.weights.iter().zip(&solution.risk_contributions))
            .map(|(symbol, (weight, risk))| AssetWeight {
                symbol: symbol.clone(),
                weight: *weight,
                risk_contribution: *risk,
            })
            .collect(),
        expected_return: solution.expected_return,
        volatility: solution.volatility,
        sharpe_ratio: solution.sharpe_ratio,
        observations: solution.observations as u32,
    })
}
