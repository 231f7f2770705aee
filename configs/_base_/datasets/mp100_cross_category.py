# MP-100 cross-super-category splits (leave one super-category out; the POMNet / CapeFormer
# protocol). Data only: the configs under configs/{capeformer,metapoint,fmmp}/cross_category/
# inherit this file next to their model's split-1 1-shot config and take the dataset overrides
# of one entry: {{_base_.mp100_cross_category.<split>.{train,val,test}_dataset}}.
#
# The official category lists are not published (CapeFormer ships only the file names
# cross_category_annotations/fewshot_{train,test}_<split>.json). These are derived from the
# MP-100 category records and source datasets; docs/cross_category.md gives the rules:
#   human_body: the COCO 'person' category (17 keypoints);
#   human_face: the two categories named 'face' (18: AFLW, 19 keypoints, image folder
#               amur_tiger_body despite its name; 40: 300W, 68 keypoints, folder human_face);
#   vehicle:    the CarFusion categories (supercategory 'vehicle');
#   furniture:  the Keypoint-5 categories (supercategory 'furniture').
# Train = every other MP-100 category (ids 1..100 minus the test ids): only the held-out
# super-category is set aside. Val = test (the official configs validate on the test file), so
# report the final checkpoint, not the best-on-val one.
# Ids are in ascending order, which is the episode order (there is no official order).
# test_episodes: 200 (human body, human face) or 100 (vehicle, furniture) episodes of 1 shot and
# 15 queries per test category; val_episodes: 200 for all four, as in the official configs.


def _split(name, test, test_episodes):
    """test: {category id: MP-100 category name}."""
    ids = sorted(test)
    train_ids = [i for i in range(1, 101) if i not in test]
    # the dataset overrides a config applies: category lists on the unified file, 1 shot
    select = dict(split=None, subset=None, num_shots=1)
    evaluate = dict(select, valid_class_ids=ids, num_queries=15)
    return dict(name=name, test_ids=ids, test_names=[test[i] for i in ids], train_ids=train_ids,
                num_shots=1, num_queries=15, test_episodes=test_episodes, val_episodes=200,
                train_dataset=dict(select, valid_class_ids=train_ids),
                val_dataset=dict(evaluate, num_episodes=200),
                test_dataset=dict(evaluate, num_episodes=test_episodes))


mp100_cross_category = dict(
    human_body=_split('human body', {72: 'person'}, 200),
    human_face=_split('human face', {18: 'face', 40: 'face'}, 200),
    vehicle=_split('vehicle', {32: 'car', 38: 'bus', 51: 'suv'}, 100),
    furniture=_split('furniture', {39: 'swivelchair', 45: 'chair', 49: 'sofa', 84: 'bed',
                                   98: 'table'}, 100),
)
del _split
