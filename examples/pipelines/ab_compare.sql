WITH items AS (SELECT * FROM lineitem WHERE l_discount <= 0.05),
     stats AS (SELECT avg(CAST(l_quantity AS DOUBLE)) AS m, stddev_pop(CAST(l_quantity AS DOUBLE)) AS sd FROM items)
SELECT bucketize(l_quantity, 10, 25, 40) AS qty_bucket,
       ordinal_encode(l_shipmode, 'AIR', 'FOB', 'MAIL', 'RAIL', 'REG AIR', 'SHIP', 'TRUCK') AS mode_code,
       count(*) AS items,
       round(avg(predict('price', l_quantity, l_discount)), 3) AS avg_a,
       round(avg(predict('two_inputs', l_quantity, l_discount)), 3) AS avg_b,
       round(avg(predict('price', l_quantity, l_discount) - predict('two_inputs', l_quantity, l_discount)), 3) AS mean_gap,
       round(avg((CAST(l_quantity AS DOUBLE) - stats.m) / stats.sd), 4) AS avg_qty_z
FROM items CROSS JOIN stats
GROUP BY 1, 2
ORDER BY 1, 2
