SELECT site() AS site,
       CASE WHEN p IS NULL THEN 'unreadable' WHEN p > 0.5 THEN 'upside down' ELSE 'upright' END AS direction,
       count(*) AS lines
FROM (SELECT predict_proba('text_direction', image_tensor(content, 48, 192, 'nchw', 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 'pad')) AS p FROM line_files)
GROUP BY 1, 2
ORDER BY 1, 2
