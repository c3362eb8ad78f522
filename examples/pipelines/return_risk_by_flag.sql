SELECT l_returnflag,
       count(*) AS items,
       round(avg(predict_proba('return_risk', l_quantity, l_extendedprice, l_discount, l_tax)), 6) AS avg_risk,
       round(sum(l_extendedprice * (1 - l_discount)), 2) AS revenue
FROM lineitem
WHERE l_shipdate >= DATE '1995-01-01'
GROUP BY l_returnflag
ORDER BY l_returnflag
