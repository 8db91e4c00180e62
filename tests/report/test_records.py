

def test_recipe_brief_names_the_group_only_for_quantized_recipes():
    from lmforge.report.records import recipe_brief

    assert recipe_brief({"method": "gptq", "bits": 4, "group_size": 64}) == "gptq int4 g64"
    assert recipe_brief({"method": "wanda", "sparsity": 0.5, "group_size": 64, "quantize_bits": None}) == "wanda 50%"
    assert recipe_brief({"method": "wanda", "sparsity": 0.5, "pattern": "2:4", "group_size": 64,
                         "quantize_bits": 4}) == "wanda int4 g64 50% 2:4"
