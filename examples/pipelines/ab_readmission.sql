-- The SQL equivalent of ab_readmission.toml.
SELECT site() AS site, count(*) AS visits,
  evaluate('auc', predict_proba('readmission', age, bmi, systolic_bp, glucose, prior_visits), readmitted) AS auc_logistic,
  evaluate('auc', predict_proba('readmission_mlp', age, bmi, systolic_bp, glucose, prior_visits), readmitted) AS auc_mlp,
  compare_models('log_loss',
    predict_proba('readmission', age, bmi, systolic_bp, glucose, prior_visits),
    predict_proba('readmission_mlp', age, bmi, systolic_bp, glucose, prior_visits),
    readmitted) AS mlp_vs_logistic
FROM visits GROUP BY site() ORDER BY site
