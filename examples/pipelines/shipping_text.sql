SELECT lower(l_shipmode) AS mode,
       regex_extract(l_shipinstruct, '^(\w+)', 1) AS verb,
       count(*) AS items,
       sum(token_count(l_shipinstruct)) AS words,
       count(DISTINCT hash_bucket(l_comment, 8)) AS buckets
FROM lineitem
WHERE l_shipmode IN ('RAIL', 'TRUCK')
GROUP BY 1, 2
ORDER BY 1, 2
