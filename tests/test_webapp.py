"""The web demo (demo/webapp.py): its Python callbacks, and the whole flow in headless Chromium.

The browser test serves the page in this process on a free loopback port with a tiny random-weight
MetaPoint model and drives the distribution's Chromium through selenium: upload a support image,
click keypoints on it, upload a query, pick the model, run, then read the result picture and the
predictions JSON back from the links of the page. It skips only when Chromium or ChromeDriver is
not installed (``bash scripts.sh install-browser``; CHROMIUM_BIN / CHROMEDRIVER_BIN override the
default paths). On a failure it leaves a screenshot and the page source in its tmp_path.
"""
import contextlib
import importlib.util
import json
import os
import re
import shutil
import sys
import urllib.request
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
import pytest
import torch

from metapoint.apis import load_support_spec
from metapoint.visualization import keypoint_colors
from tests.helpers import REPO, free_port

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
# Gradio's queue calls pandas options that pandas 3 deprecates (not this code's business)
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings('ignore:The copy keyword is deprecated')]

CONFIG = REPO / 'configs/metapoint/metapoint_r18_1xb8_synthetic-random-split1_1shot_quickstart.py'
CHROMIUM = os.environ.get('CHROMIUM_BIN') or '/usr/bin/chromium'
CHROMEDRIVER = os.environ.get('CHROMEDRIVER_BIN') or '/usr/bin/chromedriver'


@pytest.fixture(scope='module')
def webapp():
    spec = importlib.util.spec_from_file_location('cape_webapp', REPO / 'demo' / 'webapp.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A random-weight checkpoint of the tiny quickstart MetaPoint (ResNet-18, 128 px)."""
    from mmengine.config import Config

    from metapoint.apis import init_estimator
    from metapoint.models.backbones import disable_backbone_pretrained
    cfg = Config.fromfile(str(CONFIG))
    disable_backbone_pretrained(cfg.model)
    torch.manual_seed(0)
    model = init_estimator(cfg)
    path = tmp_path_factory.mktemp('ckpt') / 'tiny_metapoint.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope='module')
def demo(webapp, checkpoint, tmp_path_factory):
    """One app for the module (the model is built once, on the first run)."""
    return webapp.WebDemo([webapp.ModelEntry(str(CONFIG), checkpoint)],
                          out_dir=str(tmp_path_factory.mktemp('webapp_out')))


def gradient_image(h: int, w: int, flip: bool = False) -> np.ndarray:
    """A smooth BGR test picture (colour ramps plus a grey disc)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 200 // w, yy * 200 // h, np.full_like(xx, 60)], -1).astype(np.uint8)
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, (128, 128, 128), -1)
    return img[:, ::-1].copy() if flip else img


def write(path: Path, img: np.ndarray) -> str:
    assert cv2.imwrite(str(path), img)
    return str(path)


@contextlib.contextmanager
def gr_error(pattern: str):
    """Expect a ``gr.Error`` (the message the page shows) matching the regex ``pattern``."""
    with pytest.raises(gr.Error) as err:
        yield
    assert re.search(pattern, err.value.message), (pattern, err.value.message)


def click(demo, state, x, y, skeleton=''):
    return demo.on_support_click(state, skeleton,
                                 gr.SelectData(None, {'index': [x, y], 'value': None}))


def rgb_colour(k: int, num: int):
    return tuple(int(v) for v in keypoint_colors(num)[k][::-1])


def tile_scale(height: int, shape) -> float:
    return height / shape[0]


# ---------------------------------------------------------------------------- callbacks
def test_clicks_add_keypoints_drawn_at_once_undo_and_clear(demo, tmp_path):
    img = gradient_image(120, 160)
    state, shown, listing = demo.on_support_image(write(tmp_path / 'cat.png', img))
    assert state['name'] == 'cat.png' and state['keypoints'] == []
    np.testing.assert_array_equal(shown, img[..., ::-1])  # RGB, nothing drawn yet
    assert listing.startswith('no keypoints yet')
    clicks = [(20, 30), (130, 25), (80, 100)]
    for n, (x, y) in enumerate(clicks, 1):
        state, shown, listing = click(demo, state, x, y, '0-1, 1-2')
        assert state['keypoints'] == [[float(a), float(b)] for a, b in clicks[:n]]
        for k, (a, b) in enumerate(clicks[:n]):  # every point in its colour for n keypoints
            assert tuple(shown[b, a]) == rgb_colour(k, n), (n, k)
    assert listing.splitlines() == ['3 keypoint(s)', '0: 20, 30', '1: 130, 25', '2: 80, 100']
    # the skeleton link 0-1 is drawn (light grey) half way between the two points
    assert tuple(shown[27, 75]) != tuple(img[27, 75, ::-1])

    state, shown, listing = demo.on_undo(state, '')
    assert state['keypoints'] == [[20.0, 30.0], [130.0, 25.0]]
    assert tuple(shown[100, 80]) == tuple(img[100, 80, ::-1])  # the undone point is gone
    assert listing.startswith('2 keypoint(s)')
    state, shown, listing = demo.on_clear(state)
    assert state['keypoints'] == [] and state['image'] is not None
    np.testing.assert_array_equal(shown, img[..., ::-1])
    state, shown, listing = demo.on_undo(state, '')  # undo on nothing stays empty
    assert state['keypoints'] == []

    with gr_error('Support image: click .*outside the 160x120 image'):
        click(demo, state, 160, 5)
    with gr_error('Support image: upload a support image'):
        click(demo, None, 3, 3)
    state, shown, listing = demo.on_support_image(None)  # the image was removed
    assert shown is None and state['image'] is None and listing == 'no support image yet'


def test_skeleton_field_parsing(webapp):
    assert webapp.parse_skeleton('0-1, 1-2;2 3\n3:0', 4) == [[0, 1], [1, 2], [2, 3], [3, 0]]
    assert webapp.parse_skeleton('[[0, 1], [2, 1]]', 3) == [[0, 1], [2, 1]]
    assert webapp.parse_skeleton('  ', 3) == []
    for text, match in [('0-3', 'index 3 .* out of range; the support has 3 keypoints'),
                        ('0-1, a-b', 'cannot read "a-b"'), ('1-1', 'links a keypoint to itself'),
                        ('[[0, 1], [2]]', 'list of \\[i, j\\] integer pairs'),
                        ('[[0, 1]', 'not valid JSON')]:
        with gr_error('^Skeleton: .*' + match):
            webapp.parse_skeleton(text, 3)
    # while clicking, links to keypoints not clicked yet are kept for drawing; bad text: none
    assert webapp.lenient_skeleton('0-5') == [[0, 5]] and webapp.lenient_skeleton('x') == []


def check_result_picture(webapp, canvas, support_shape, query_shapes, support_kpts, preds):
    """``canvas`` (RGB): one row per query, the support tile then the query tile, each
    RESULT_HEIGHT high; the support keypoints and the predictions in their colours."""
    height = webapp.RESULT_HEIGHT
    k = len(support_kpts)
    s_scale = tile_scale(height, support_shape)
    s_width = int(round(support_shape[1] * s_scale))
    widths = [s_width + int(round(q[1] * tile_scale(height, q))) for q in query_shapes]
    assert canvas.shape == (height * len(query_shapes), max(widths), 3)
    colours = {rgb_colour(j, k) for j in range(k)}
    for row, (shape, pred) in enumerate(zip(query_shapes, preds)):
        for j, (x, y) in enumerate(support_kpts):  # support keypoints, well apart
            px = canvas[row * height + int(round(y * s_scale)), int(round(x * s_scale))]
            assert tuple(px) == rgb_colour(j, k), (row, j, px)
        q_scale = tile_scale(height, shape)
        inside = [(j, x, y) for j, (x, y) in enumerate(pred)
                  if 0 <= x * q_scale < widths[row] - s_width - 1 and
                  20 < y * q_scale < height - 1]  # below the caption
        for j, x, y in inside:  # a prediction may hide under a later one, never a non-colour
            px = canvas[row * height + int(round(y * q_scale)),
                        s_width + int(round(x * q_scale))]
            assert tuple(px) in colours, (row, j, px)
        if inside:  # the last keypoint drawn is never covered
            j, x, y = inside[-1]
            px = canvas[row * height + int(round(y * q_scale)), s_width + int(round(x * q_scale))]
            assert tuple(px) == rgb_colour(j, k), (row, j, px)


def test_run_draws_support_beside_queries_and_writes_json(webapp, demo, tmp_path):
    support = gradient_image(120, 160)
    state = demo.on_support_image(write(tmp_path / 'support.png', support))[0]
    clicks = [(20, 30), (130, 25), (80, 100)]
    for x, y in clicks:
        state = click(demo, state, x, y)[0]
    queries = [write(tmp_path / 'q_wide.png', gradient_image(100, 180, flip=True)),
               write(tmp_path / 'q_tall.jpg', gradient_image(150, 90))]
    choice = demo.model_choices()[0]
    canvas, files, status = demo.run(state, queries, choice, '', '', '0-1, 1-2')
    assert [Path(f).name for f in files] == ['predictions.json', 'result.png', 'support.json']
    assert '2 query image(s), 3 keypoints' in status

    record = json.loads(Path(files[0]).read_text())
    assert record['num_keypoints'] == 3 and record['skeleton'] == [[0, 1], [1, 2]]
    assert record['support']['keypoints'] == [[float(x), float(y)] for x, y in clicks]
    assert record['support']['image'] == 'support.png'
    assert record['support']['image_size'] == [160, 120]
    saved = json.loads(Path(files[2]).read_text())  # reloadable support spec with visibility
    assert saved['keypoints'] == [[float(x), float(y), 1] for x, y in clicks]
    assert [q['image'] for q in record['queries']] == ['q_wide.png', 'q_tall.jpg']
    assert [q['image_size'] for q in record['queries']] == [[180, 100], [90, 150]]
    preds = [np.array(q['keypoints'], np.float64) for q in record['queries']]
    assert all(p.shape == (3, 2) and np.isfinite(p).all() for p in preds)
    assert record['model']['config'] == str(CONFIG)

    check_result_picture(webapp, canvas, support.shape, [(100, 180), (150, 90)], clicks, preds)
    np.testing.assert_array_equal(cv2.imread(files[1])[..., ::-1], canvas)  # download = shown

    # the support JSON download is a valid support spec for the command-line demo
    shutil.copy(tmp_path / 'support.png', tmp_path / 'again.png')
    spec = json.loads(Path(files[2]).read_text())
    assert spec['image'] == 'support.png' and spec['skeleton'] == [[0, 1], [1, 2]]
    reloaded = load_support_spec(dict(spec, image='again.png'), base_dir=tmp_path)
    np.testing.assert_allclose(reloaded.keypoints, clicks)


def test_support_json_loads_keypoints_names_skeleton(webapp, demo, tmp_path):
    img = gradient_image(90, 120)
    write(tmp_path / 'dog.png', img)
    spec = dict(image='pictures/dog.png', keypoints=[[10, 20, 2], [100, 30, 1], [5, 5, 0]],
                names=['nose', 'tail', 'paw'], skeleton=[[0, 1]], bbox=[0, 0, 120, 90])
    path = tmp_path / 'dog.json'
    path.write_text(json.dumps(spec))
    # the uploaded image of the same file name is used (uploads lose their folders)
    state, shown, listing, skeleton = demo.on_support_json([str(path), str(tmp_path / 'dog.png')],
                                                           None)
    assert state['keypoints'] == [[10.0, 20.0], [100.0, 30.0], [5.0, 5.0]]
    assert state['visible'] == [1.0, 1.0, 0.0] and state['bbox'] == [0.0, 0.0, 120.0, 90.0]
    assert skeleton == '0-1' and state['name'] == 'dog.png'
    assert listing.splitlines()[1:] == ['0 nose: 10, 20', '1 tail: 100, 30',
                                        '2 paw: 5, 5 (not annotated)']
    assert tuple(shown[20, 10]) == rgb_colour(0, 3)
    assert tuple(shown[5, 5]) == tuple(img[5, 5, ::-1])  # not annotated: not drawn
    # without the image upload, the current support image is used
    state2 = demo.on_support_json(str(path), state)[0]
    np.testing.assert_array_equal(state2['image'], img[..., ::-1])
    # a click after loading adds a 4th, visible keypoint
    state3 = click(demo, state, 60, 60)[0]
    assert state3['visible'] == [1.0, 1.0, 0.0, 1.0]

    bad = tmp_path / 'bad.json'
    for content, match in [
            ('{"image": "dog.png", "keypoints": [[10, 20], [500, 30]]}',
             "field 'keypoints\\[1\\]': \\(500, 30\\) is outside the 120x90 image"),
            ('{"image": "dog.png"}', "field 'keypoints'"),
            ('[1, 2]', 'must hold an object'),
            ('{"image": "dog.png", "keypoints": [[1, 2]]', 'cannot read "bad.json"')]:
        bad.write_text(content)
        with gr_error('^Support JSON: .*' + match):
            demo.on_support_json([str(bad), str(tmp_path / 'dog.png')], None)
    bad.write_text('{"image": "elsewhere/cow.png", "keypoints": [[1, 2], [3, 4]]}')
    with gr_error('Support JSON: its image "elsewhere/cow.png" is not on'):
        demo.on_support_json([str(bad)], None)
    with gr_error('Support JSON: give exactly one .json file'):
        demo.on_support_json([str(bad), str(path)], None)


def test_bad_inputs_give_errors_naming_the_field(webapp, demo, tmp_path):
    support = write(tmp_path / 's.png', gradient_image(60, 80))
    query = write(tmp_path / 'q.png', gradient_image(60, 80))
    not_image = tmp_path / 'fake.png'
    not_image.write_text('not a picture')
    state = demo.on_support_image(support)[0]
    one = click(demo, state, 10, 10)[0]
    two = click(demo, one, 50, 40)[0]
    same_x = click(demo, one, 10, 40)[0]
    model = demo.model_choices()[0]
    custom = webapp.CUSTOM_MODEL
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint')
    cases = [
        ((None, [query], model, '', '', ''), 'Support image: upload a support image'),
        ((state, [query], model, '', '', ''), 'Support keypoints: click at least 2 keypoints'),
        ((same_x, [query], model, '', '', ''), 'Support keypoints: .*span no area'),
        ((two, [query], model, '', '', '0-2'), 'Skeleton: keypoint index 2'),
        ((two, [], model, '', '', ''), 'Query images: upload at least one'),
        ((two, [str(not_image)], model, '', '', ''), 'Query images: "fake.png": not a readable'),
        ((two, [query], None, '', '', ''), 'Model: no model chosen'),
        ((two, [query], 'other', '', '', ''), 'Model: unknown choice "other"'),
        ((two, [query], custom, '', '', ''), 'Config path: empty'),
        ((two, [query], custom, str(tmp_path / 'no.py'), '', ''), 'Config path: no such file'),
        ((two, [query], custom, str(CONFIG), '', ''), 'Checkpoint path: empty'),
        ((two, [query], custom, str(CONFIG), str(tmp_path / 'no.pth'), ''),
         'Checkpoint path: no such file'),
        ((two, [query], custom, str(CONFIG), str(garbage), ''), 'Model: cannot build'),
    ]
    for args, match in cases:
        with gr_error('^' + match):
            demo.run(*args)
    # without the path fields (a non-loopback host), the custom entry is not offered
    closed = webapp.WebDemo([], allow_custom_model=False, out_dir=str(tmp_path / 'o'))
    assert closed.model_choices() == []
    with gr_error('Model: no model chosen; pick one from the list$'):
        closed.run(two, [query], None, str(CONFIG), str(garbage), '')


def test_command_line(webapp, checkpoint, tmp_path, capsys):
    img = write(tmp_path / 'a.png', gradient_image(20, 20))
    args = webapp.parse_args(['--config', str(CONFIG), '--checkpoint', checkpoint,
                              '--config', str(CONFIG), '--checkpoint', checkpoint,
                              '--port', '7000', '--examples', str(tmp_path)])
    app = webapp.create_demo(args)
    label = webapp.ModelEntry(str(CONFIG), checkpoint).label
    assert app.model_choices() == [label, f'{label} (2)', webapp.CUSTOM_MODEL]
    assert app.examples == [img] and args.port == 7000 and args.host == '127.0.0.1'
    assert isinstance(app.build(), gr.Blocks)  # the page with the example picks
    for argv, message in [
            (['--config', str(CONFIG)], '--config and --checkpoint must come in pairs'),
            (['--config', 'nope.py', '--checkpoint', checkpoint], '--config: no such file'),
            (['--device', 'tpu'], '--device: expected cpu, cuda or cuda:N'),
            (['--port', '70000'], '--port: 70000 is not a TCP port'),
            (['--examples', str(tmp_path / 'none')], '--examples: no such file or folder'),
            (['--examples', str(CONFIG)], 'is not an image file'),
            (['--host', '0.0.0.0'], 'the path fields are off when serving on 0.0.0.0')]:
        with pytest.raises(SystemExit):
            webapp.parse_args(argv)
        assert message in capsys.readouterr().err
    assert webapp.create_demo(webapp.parse_args(
        ['--host', '0.0.0.0', '--config', str(CONFIG), '--checkpoint', checkpoint]
    )).model_choices() == [label]


# ---------------------------------------------------------------------------- the browser
def _chrome(tmp_path):
    missing = [f'{name} ({path}; set {env} to another path)'
               for name, path, env in (('Chromium', CHROMIUM, 'CHROMIUM_BIN'),
                                       ('ChromeDriver', CHROMEDRIVER, 'CHROMEDRIVER_BIN'))
               if not (os.path.isfile(path) and os.access(path, os.X_OK))]
    if missing:
        pytest.skip(f'web demo browser test: {" and ".join(missing)} not installed; '
                    '`bash scripts.sh install-browser` installs them')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                 '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run', '--window-size=1400,1800',
                 f'--user-data-dir={tmp_path / "chromium_profile"}'):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def _click_to_pixel(driver, img_el, dx: int, dy: int):
    """Where a click at ``(dx, dy)`` CSS pixels from the centre of ``img_el`` lands in image
    pixels, from the element's box and its object-fit (centred), and the tolerance."""
    box = driver.execute_script(
        'const e = arguments[0], r = e.getBoundingClientRect(), s = getComputedStyle(e);'
        'const px = v => parseFloat(v) || 0;'
        'return {left: r.left + px(s.paddingLeft) + px(s.borderLeftWidth),'
        ' top: r.top + px(s.paddingTop) + px(s.borderTopWidth),'
        ' cx: r.left + r.width / 2, cy: r.top + r.height / 2,'
        ' w: r.width - px(s.paddingLeft) - px(s.paddingRight) - px(s.borderLeftWidth)'
        '    - px(s.borderRightWidth),'
        ' h: r.height - px(s.paddingTop) - px(s.paddingBottom) - px(s.borderTopWidth)'
        '    - px(s.borderBottomWidth),'
        ' nw: e.naturalWidth, nh: e.naturalHeight, fit: s.objectFit, pos: s.objectPosition};',
        img_el)
    assert box['fit'] in ('contain', 'scale-down') and box['pos'] == '50% 50%', box
    scale = min(box['w'] / box['nw'], box['h'] / box['nh'])
    if box['fit'] == 'scale-down':
        scale = min(scale, 1.0)
    off_x = (box['w'] - box['nw'] * scale) / 2
    off_y = (box['h'] - box['nh'] * scale) / 2
    x = (box['cx'] + dx - box['left'] - off_x) / scale
    y = (box['cy'] + dy - box['top'] - off_y) / scale
    return (x, y), 1.0 / scale + 0.5  # a CSS pixel of rounding, and the page's own rounding


def test_browser_whole_flow(webapp, demo, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chrome(tmp_path)
    port = free_port()
    base = f'http://127.0.0.1:{port}'
    page = webapp.launch(demo, '127.0.0.1', port, block=False)
    # big enough to be shown scaled down: click offsets are converted to image pixels
    support = gradient_image(600, 800)
    support_path = write(tmp_path / 'support.png', support)
    query_path = write(tmp_path / 'query.png', gradient_image(240, 320, flip=True))
    label = demo.model_choices()[0]

    def css(selector):
        return driver.find_element(By.CSS_SELECTOR, selector)

    def wait_for(what, condition, timeout=60):
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(
            lambda d: condition(), message=f'timed out after {timeout} s waiting for {what}')

    def listing():
        return css('#keypoint-list textarea').get_attribute('value')

    def loaded_support_img():  # the picture, once decoded and laid out
        return driver.execute_script(
            "const e = document.querySelector('#support-image img');"
            'return e && e.complete && e.naturalWidth > 0 && '
            'e.getBoundingClientRect().width > 0 ? e : null;')

    def click_support(dx, dy):
        for attempt in range(3):  # the picture is replaced after each click: find it again
            img_el = wait_for('the support picture', loaded_support_img)
            try:
                where = _click_to_pixel(driver, img_el, dx, dy)
                ActionChains(driver).move_to_element_with_offset(img_el, dx, dy).click().perform()
                return where
            except StaleElementReferenceException:
                if attempt == 2:
                    raise

    try:
        driver.get(base)
        wait_for('the page', lambda: driver.find_elements(
            By.CSS_SELECTOR, '#support-image input[type=file]'))
        css('#support-image input[type=file]').send_keys(support_path)
        wait_for('the support image to be processed',
                 lambda: listing().startswith('no keypoints yet'))
        offsets = [(-150, -90), (120, -60), (30, 110), (-60, 40)]
        expected = []
        for n, (dx, dy) in enumerate(offsets, 1):
            expected.append(click_support(dx, dy))
            wait_for(f'keypoint {n} in the list', lambda: listing().startswith(f'{n} keypoint'))
        css('#undo-btn').click()  # the 4th click was a mistake
        wait_for('the undo', lambda: listing().startswith('3 keypoint'))
        expected = expected[:3]
        css('#skeleton textarea, #skeleton input').send_keys('0-1, 1-2')

        css('#run-btn').click()  # no query yet: the error reaches the page
        toast = wait_for('the error message', lambda: [
            t for t in driver.find_elements(By.CSS_SELECTOR, '[data-testid=toast-body]')
            if 'Query images: upload at least one query image' in t.text])
        toast[0].find_element(By.CSS_SELECTOR, '[data-testid=toast-close]').click()

        css('#query-images input[type=file]').send_keys(query_path)
        wait_for('the query upload', lambda: driver.find_elements(
            By.CSS_SELECTOR, '#query-images [data-testid=download-link]'))
        css('#model-choice input').click()
        option = wait_for('the model list', lambda: [
            o for o in driver.find_elements(By.CSS_SELECTOR, '[data-testid=dropdown-option]')
            if o.text.strip().endswith(label)])
        option[0].click()
        wait_for('the model choice', lambda: css('#model-choice input')
                 .get_attribute('value') == label)
        css('#run-btn').click()
        links = wait_for('the result downloads', lambda: driver.find_elements(
            By.CSS_SELECTOR, '#downloads [data-testid=download-link]') if len(
            driver.find_elements(By.CSS_SELECTOR, '#downloads [data-testid=download-link]')
        ) == 3 else None, timeout=120)
        hrefs = {link.get_attribute('download'): link.get_attribute('href') for link in links}
        assert set(hrefs) == {'predictions.json', 'result.png', 'support.json'}, hrefs
        result_src = wait_for('the result picture', lambda: [
            e.get_attribute('src') for e in driver.find_elements(By.CSS_SELECTOR,
                                                                 '#result-image img')])[0]
        status = css('#run-status').text
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")

        record = json.loads(_fetch(hrefs['predictions.json']))
        assert record['num_keypoints'] == 3, record
        got = np.array(record['support']['keypoints'], np.float64)
        for k, ((x, y), tol) in enumerate(expected):  # the clicks reached the server
            assert abs(got[k, 0] - x) <= tol and abs(got[k, 1] - y) <= tol, (k, got[k], x, y)
        assert record['skeleton'] == [[0, 1], [1, 2]]
        assert [q['image'] for q in record['queries']] == ['query.png']
        assert record['support']['image'] == 'support.png'  # the upload's file name
        pred = np.array(record['queries'][0]['keypoints'], np.float64)
        assert pred.shape == (3, 2) and np.isfinite(pred).all(), pred
        assert '1 query image(s), 3 keypoints' in status, status

        for src in (result_src, hrefs['result.png']):
            shown = cv2.imdecode(np.frombuffer(_fetch(src), np.uint8), cv2.IMREAD_COLOR)
            check_result_picture(webapp, shown[..., ::-1], support.shape, [(240, 320)],
                                 got, [pred])
        # nothing came from outside the app (fonts, scripts, styles are all local)
        outside = [r for r in resources if not r.startswith((base + '/', 'data:', 'blob:'))]
        assert not outside, outside
    except Exception as exc:  # noqa: BLE001 (any failure: keep what the browser showed)
        shot, source = tmp_path / 'failure.png', tmp_path / 'failure.html'
        try:
            driver.save_screenshot(str(shot))
            source.write_text(driver.page_source)
        except WebDriverException:
            pass
        raise AssertionError(f'{type(exc).__name__}: {exc}\nscreenshot: {shot}\n'
                             f'page source: {source}') from exc
    finally:
        driver.quit()
        page.close()
