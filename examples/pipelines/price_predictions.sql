SELECT l_orderkey, l_linenumber, l_shipmode, round(predict('price', l_quantity, l_discount), 3) AS price_hat
FROM lineitem
WHERE l_shipmode IN ('AIR', 'MAIL')
